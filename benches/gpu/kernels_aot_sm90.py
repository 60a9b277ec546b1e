"""Compile kdlens's Triton row kernel for sm_90 without a GPU (triton's bundled ptxas) and print register use.

Every variant must print OK; LOCAL:0 in the usage line means no spills. The argument list is read from
the kernel itself, so this stays in step with kernels/kd_logits.py. Run after every kernel change:
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

CONSTEXPRS = ["OBJECTIVE", "HAS_NOISE", "HAS_CE", "WRITE_GRAD", "BLOCK_V"]
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


def main() -> int:
    failures = 0
    names = kd_rows_kernel.arg_names
    # what V = 151936 and 16-byte aligned pointers/strides get at launch (seed, row_offset not specialised)
    aligned = [i for i, n in enumerate(names) if n.endswith(("_ptr", "_stride")) or n == "V"]
    attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
    for sdt, gdt, lab in [("fp32", "bf16", "i64"), ("bf16", "bf16", "fp32"), ("fp32", "fp32", "i64")]:
        sig = signature(sdt, gdt, lab)
        for obj in range(7):
            for noise in (False, True):
                for write_grad in (True, False):
                    const = {"OBJECTIVE": obj, "HAS_NOISE": noise, "HAS_CE": lab == "i64", "WRITE_GRAD": write_grad,
                             "BLOCK_V": 4096}
                    try:
                        k = triton.compile(ASTSource(kd_rows_kernel, sig, const, attrs),
                                           target=GPUTarget("cuda", 90, 32), options={"num_warps": 16})
                    except Exception as e:  # noqa: BLE001
                        failures += 1
                        print("FAIL", sdt, gdt, obj, noise, write_grad, type(e).__name__, str(e)[-400:])
                        continue
                    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
                        f.write(k.asm["cubin"])
                    use = [ln.strip() for ln in subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True,
                                                               text=True).stdout.splitlines() if "REG" in ln]
                    print("OK", sdt, gdt, "obj", obj, "noise", noise, "grad", write_grad,
                          " ".join(use[0].split()[:5]) if use else "")
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
