"""Math reasoning tasks (LLM-Adapters test files): the answer is the last number, or AQuA's letter.

Sizes are the paper's test-set sizes (paper.md section 5). Folder names are those of
LLM-Adapters' ``dataset/`` folder, so ``--data-dir path/to/LLM-Adapters/dataset`` finds every file.
"""

from kdlens.eval.tasks.formats import llm_adapters_example, read_llm_adapters
from kdlens.eval.tasks.registry import Task, register
from kdlens.eval.tasks.rules import AQUA_LETTER, LAST_NUMBER

# (name, display name, LLM-Adapters folder, paper size, aliases)
_MATH = (
    ("gsm8k", "GSM8K", "gsm8k", 1319, ("gsm_8k",)),
    ("svamp", "SVAMP", "SVAMP", 1000, ()),
    ("multiarith", "MultiArith", "MultiArith", 600, ("multi_arith",)),
    ("singleeq", "SingleEq", "SingleEq", 508, ("single_eq",)),
    ("addsub", "AddSub", "AddSub", 395, ("add_sub",)),
    ("aqua", "AQuA", "AQuA", 254, ("aqua_rat",)),
)

for _name, _display, _folder, _size, _aliases in _MATH:
    register(Task(
        name=_name, family="math", display=_display, metric="accuracy",
        rule=AQUA_LETTER if _name == "aqua" else LAST_NUMBER,
        read=read_llm_adapters, to_example=llm_adapters_example, paper_size=_size,
        folders=(_folder,), aliases=_aliases,
        description="letter A-E, first in the output" if _name == "aqua"
        else "last number in the output, abs(gold - pred) <= 0.001",
    ))
