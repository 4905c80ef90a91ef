"""gcp-storage-emulator with the object-generation headers of the real service.

GCS answers every object download with `x-goog-generation` / `x-goog-metageneration`;
tensorstore (orbax's storage layer) reads them to make its read-modify-write of OCDBT
manifests conditional, and fails with "Malformed StorageGeneration" without them. The
emulator (2026.7) sends only the JSON body's fields, so this launcher adds the two
headers from that same object record, then runs the emulator's own CLI unchanged.
"""
import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
  except Exception:  # pylint: disable=broad-except  (not found: the handler answers 404)
    pass
  return _download(request, response, storage, *args, **kwargs)


objects.download = download

if __name__ == "__main__":
  from gcp_storage_emulator.__main__ import main
  main(sys.argv[1:])
