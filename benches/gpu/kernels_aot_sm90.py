"""Compile kdlens's Triton row kernels for sm_90 without a GPU (triton's bundled ptxas) and print register use.

Every variant must print OK; LOCAL:0 in the usage line means no spills. The argument lists are read from
the kernels themselves, so this stays in step with kernels/kd_logits.py (dense: every objective, noise and
gradient variant, the token-stats variants on the first dtype set) and kernels/kd_sparse.py (sparse:
forward/reverse KL and JSD, rest bucket or not, noise+CE or not, gradient and/or stats, k = 64, the GPU
dtypes: fp32 workspace, bf16 gradient ring and cached logits, int64 ids). Run after every kernel change:
    env -u TRITON_INTERPRET python benches/gpu/kernels_aot_sm90.py
(derived from shared/tools/kernels-aot-sm90.py, whose fixed argument list predates the teacher workspace)
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kdlens.kernels.kd_logits import kd_rows_kernel  # noqa: E402
from kdlens.kernels.kd_sparse import kd_sparse_rows_kernel  # noqa: E402
from kdlens.objectives import KERNEL_IDS  # noqa: E402

CONSTEXPRS = ["OBJECTIVE", "HAS_NOISE", "HAS_CE", "WRITE_GRAD", "STATS", "BLOCK_V"]
SPARSE_CONSTEXPRS = ["OBJECTIVE", "HAS_REST", "HAS_NOISE", "HAS_CE", "WRITE_GRAD", "STATS", "BLOCK_V", "BLOCK_K"]
SPARSE_FLOATS = {"inv_t", "kd_coef", "ce_coef", "mix", "log_mix", "log_1m_mix", "sigma"}
FLOATS = {"inv_t", "kd_coef", "ce_coef", "mix", "log_mix", "log_1m_mix", "sigma"}
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")


def signature(logit_dtype: str, grad_dtype: str, label_dtype: str) -> dict:
    sig = {}
    for name in kd_rows_kernel.arg_names:
        if name in CONSTEXPRS:
            sig[name] = "constexpr"
        elif name in ("s_ptr", "t_ptr"):
            sig[name] = f"*{logit_dtype}"
        elif name == "tw_ptr":
            sig[name] = "*fp32"
        elif name == "grad_ptr":
            sig[name] = f"*{grad_dtype}"
        elif name == "label_ptr":
            sig[name] = f"*{label_dtype}"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32"
        elif name in FLOATS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def sparse_signature() -> dict:
    sig = {}
    for name in kd_sparse_rows_kernel.arg_names:
        if name in SPARSE_CONSTEXPRS:
            sig[name] = "constexpr"
        elif name == "grad_ptr" or name == "zt_ptr":
            sig[name] = "*bf16"
        elif name in ("ids_ptr", "label_ptr"):
            sig[name] = "*i64"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32"
        elif name in SPARSE_FLOATS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def compile_and_report(kernel, sig, const, attrs, label: str) -> bool:
    """Compile one variant for sm_90 and print its register line; False on failure."""
    try:
        k = triton.compile(ASTSource(kernel, sig, const, attrs), target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": 16})
    except Exception as e:  # noqa: BLE001
        print("FAIL", label, type(e).__name__, str(e)[-400:])
        return False
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    use = [ln.strip() for ln in subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True,
                                               text=True).stdout.splitlines() if "REG" in ln]
    print("OK", label, " ".join(use[0].split()[:5]) if use else "")
    return True


def sparse_variants() -> int:
    failures = 0
    names = kd_sparse_rows_kernel.arg_names
    aligned = [i for i, n in enumerate(names) if n.endswith(("_ptr", "_stride")) or n == "V"]
    attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
    sig = sparse_signature()
    for obj in ("forward_kl", "reverse_kl", "jsd"):
        for rest in (True, False):
            for noise_ce in (False, True):
                for write_grad, stats in ((True, False), (True, True), (False, True)):
                    const = {"OBJECTIVE": KERNEL_IDS[obj], "HAS_REST": rest, "HAS_NOISE": noise_ce,
                             "HAS_CE": noise_ce, "WRITE_GRAD": write_grad, "STATS": stats, "BLOCK_V": 4096,
                             "BLOCK_K": 64}
                    label = f"sparse {obj} rest {rest} noise+ce {noise_ce} grad {write_grad} stats {stats}"
                    failures += not compile_and_report(kd_sparse_rows_kernel, sig, const, attrs, label)
    return failures


def main() -> int:
    failures = sparse_variants()
    names = kd_rows_kernel.arg_names
    # what V = 151936 and 16-byte aligned pointers/strides get at launch (seed, row_offset not specialised)
    aligned = [i for i, n in enumerate(names) if n.endswith(("_ptr", "_stride")) or n == "V"]
    attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
    for sdt, gdt, lab in [("fp32", "bf16", "i64"), ("bf16", "bf16", "fp32"), ("fp32", "fp32", "i64")]:
        sig = signature(sdt, gdt, lab)
        for obj in range(7):
            for noise in (False, True):
                for write_grad in (True, False):
                    for stats in ((False, True) if sdt == "fp32" and gdt == "bf16" else (False,)):
                        const = {"OBJECTIVE": obj, "HAS_NOISE": noise, "HAS_CE": lab == "i64",
                                 "WRITE_GRAD": write_grad, "STATS": stats, "BLOCK_V": 4096}
                        label = f"{sdt} {gdt} obj {obj} noise {noise} grad {write_grad} stats {stats}"
                        failures += not compile_and_report(kd_rows_kernel, sig, const, attrs, label)
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
