"""Commonsense reasoning tasks (LLM-Adapters test files): the answer is the first label in the output.

Sizes are the paper's test-set sizes (paper.md section 5); folder names are LLM-Adapters'.
"""

from kdlens.tasks.formats import llm_adapters_example, read_llm_adapters
from kdlens.tasks.registry import Task, register

# (name, display name, LLM-Adapters folder, paper size, labels, aliases)
_COMMONSENSE = (
    ("boolq", "BoolQ", "boolq", 3270, "true|false", ()),
    ("piqa", "PIQA", "piqa", 1838, "solution1|solution2", ()),
    ("siqa", "SIQA", "social_i_qa", 1954, "answer1..answer5", ("social_i_qa", "socialiqa")),
    ("hellaswag", "HellaSwag", "hellaswag", 10042, "ending1..ending4", ()),
    ("winogrande", "WinoGrande", "winogrande", 1267, "option1|option2", ()),
    ("arc_challenge", "ARC-Challenge", "ARC-Challenge", 1172, "answer1..answer5", ("arc_c",)),
    ("arc_easy", "ARC-Easy", "ARC-Easy", 2376, "answer1..answer5", ("arc_e",)),
    ("obqa", "OBQA", "openbookqa", 500, "answer1..answer5", ("openbookqa",)),
)

for _name, _display, _folder, _size, _labels, _aliases in _COMMONSENSE:
    register(Task(
        name=_name, family="commonsense", display=_display, metric="accuracy", rule=_name,
        read=read_llm_adapters, to_example=llm_adapters_example, paper_size=_size,
        folders=(_folder,), aliases=_aliases,
        description=f"first label ({_labels}) in the output, exact match",
    ))
