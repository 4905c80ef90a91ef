"""benchmarks/profile_step.py's reading of `perf report`: every sample line parsed, each
symbol put in the category the README's profile table reports."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import profile_step  # noqa: E402

REPORT = """\
# Samples: 24K of event 'cpu-clock:ppp'
#
    57.10%  libjax_common.so      [.] ynn::dot_fp32_5x64x1_1x16x1_avx512
     3.39%  libjax_common.so      [.] Eigen::internal::gemm_pack_colmajor_block<float, long>
     2.32%  [kernel.kallsyms]     [k] clear_page_erms
     0.55%  libjax_common.so      [.] ynn::multiply_fp32_x86_avx512f_avx512bw
     0.14%  [JIT] tid 18949       [.] 0x00007ff858524147
     3.95%  libgomp.so.1          [.] 0x000000000001e02a
    60.22%  libtorch_cpu.so       [.] mkl_blas_def_sgemm_kernel_0_zen
     0.72%  libpython3.11.so.1.0  [.] gc_collect_main
     0.23%  libc.so.6             [.] unlink_chunk.constprop.0
"""


def test_parse_report_reads_every_sample_line():
  rows = profile_step.parse_report(REPORT)
  assert len(rows) == 9
  assert rows[0] == (57.10, "libjax_common.so", "ynn::dot_fp32_5x64x1_1x16x1_avx512")
  assert rows[4] == (0.14, "[JIT] tid 18949", "0x00007ff858524147")


def test_categories_of_real_symbols():
  got = [profile_step.categorize(d, s) for _, d, s in profile_step.parse_report(REPORT)]
  assert got == ["matmul", "matmul", "kernel", "other kernels", "generated code",
                 "thread pool", "matmul", "python", "other"]


def test_matmul_flops_count_forward_and_backward():
  # BERT-Base, 8 x 128 tokens: 3 x tokens x L x (2 x (4H^2 + 2HI) + 4 S H)
  per_token = 12 * (2 * (4 * 768**2 + 2 * 768 * 3072) + 4 * 128 * 768)
  assert profile_step.matmul_flops("classification", "base", 8, 0, 128) == 3.0 * 1024 * per_token
  assert (profile_step.matmul_flops("multiple_choice", "base", 4, 4, 128)
          == 2 * profile_step.matmul_flops("classification", "base", 8, 0, 128))
