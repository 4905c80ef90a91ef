# Install bert_jax on a fresh Colab runtime. This cell is launch/colab/install_cell.py,
# the same in every notebook (tests/test_colab_notebooks.py checks it and runs its logic).
# Set BERT_JAX_SOURCE to where the code is: a git URL ("https://github.com/<you>/bert_jax.git"),
# an sdist you uploaded ("/content/bert_jax-0.1.0.tar.gz"), or a checkout
# ("/content/drive/MyDrive/bert_jax"). It is installed editable from a local copy, so
# configs/ are beside the package as on a workstation.
import importlib.util, json, os, subprocess, sys, tarfile  # io: local-only module (runs before bert_jax exists)
BERT_JAX_SOURCE = os.environ.get("BERT_JAX_SOURCE", "")
JAX_VERSION = "0.10.2"  # the jax bert_jax is built and tested with (setup.py's pin)


def ask_jax(python=sys.executable, run=subprocess.run):
    """{'version', 'backend'} of the jax a fresh interpreter imports (None if none):
    the accelerator as jax itself sees it, which is what the notebook will get."""
    code = ("import json, jax; print(json.dumps({'version': jax.__version__, "
            "'backend': jax.default_backend()}))")
    r = run([python, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def install_plan(source, before, have_bert_jax):
    """(pip commands, message) for this runtime. `before` is ask_jax() of the runtime as
    it came: its TPU/GPU jax is kept when it is the version bert_jax needs, and replaced
    by the same accelerator's build of that version otherwise."""
    if have_bert_jax:
        return [], "bert_jax is installed."
    if not source:
        raise RuntimeError(
            "bert_jax is not installed and BERT_JAX_SOURCE is empty: set it in this cell "
            "(or as an environment variable) to a git URL such as "
            "git+https://github.com/<you>/bert_jax.git, an uploaded sdist/wheel path, or a "
            "checkout directory, then run the cell again.")
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    cmds = [pip + ["-e", checkout_dir(source)]]
    backend = (before or {}).get("backend", "cpu")
    if before and before["version"] == JAX_VERSION:
        return cmds, f"keeping the runtime's jax {JAX_VERSION} ({backend})."
    extra = {"tpu": "[tpu]", "gpu": "[cuda12]"}.get(backend, "")
    cmds.append(pip + [f"jax{extra}=={JAX_VERSION}"])
    was = f"jax {before['version']}" if before else "no jax"
    return cmds, f"replacing the runtime's {was} ({backend}) by jax{extra}=={JAX_VERSION}."


def checkout_dir(source):
    """Where the code of `source` is (or will be) on local disk."""
    if os.path.isdir(source):
        return os.path.abspath(source)
    return os.path.abspath("bert_jax_src")


def fetch(source, run=subprocess.run):
    """A git URL is cloned, an sdist unpacked, into checkout_dir(source)."""
    dest = checkout_dir(source)
    if os.path.isdir(source) or os.path.isdir(dest):
        return dest
    if source.endswith((".tar.gz", ".tgz")):
        with tarfile.open(source) as tar:
            top = tar.getnames()[0].split("/")[0]
            tar.extractall(os.path.dirname(dest), filter="data")
        os.rename(os.path.join(os.path.dirname(dest), top), dest)
    else:
        run(["git", "clone", "--depth=1", source, dest], check=True)
    return dest


def install(source=BERT_JAX_SOURCE, run=subprocess.run, modules=sys.modules, have=None):
    if have is None:
        have = importlib.util.find_spec("bert_jax") is not None
    before = None if have else ask_jax(run=run)
    cmds, message = install_plan(source, before, have)
    print(message)
    if cmds:
        sys.path.insert(0, fetch(source, run))  # this kernel: no restart for the package
    for cmd in cmds:
        run(cmd, check=True)
    after = ask_jax(run=run)
    if cmds and before and after and after["backend"] != before["backend"]:
        raise RuntimeError(f"jax saw a {before['backend'].upper()} before the install and "
                           f"sees {after['backend'].upper()} after it: reinstall "
                           f"jax{'[tpu]' if before['backend'] == 'tpu' else ''}=="
                           f"{JAX_VERSION} or restart the runtime.")
    if cmds and "jax" in modules and before and after and before["version"] != after["version"]:
        print("jax changed version under this kernel: Runtime > Restart session, then run "
              "the notebook from the top.")
        return "restart"
    return after


INSTALL = install()
