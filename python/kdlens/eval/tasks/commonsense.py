"""Commonsense reasoning tasks (LLM-Adapters test files): the answer is the first label in the output.

Sizes are the paper's test-set sizes (paper.md section 5); folder names are LLM-Adapters'. The
paper's tables head the ARC columns "ARC-c" and "ARC-e" (``short``).
"""

from kdlens.eval.tasks.formats import llm_adapters_example, read_llm_adapters
from kdlens.eval.tasks.registry import Task, register
from kdlens.eval.tasks.rules import ANSWER_1_TO_5, BOOLQ, HELLASWAG, PIQA, WINOGRANDE

# (name, display name, paper's table header, LLM-Adapters folder, paper size, rule, labels, aliases)
_COMMONSENSE = (
    ("boolq", "BoolQ", "BoolQ", "boolq", 3270, BOOLQ, "true|false", ()),
    ("piqa", "PIQA", "PIQA", "piqa", 1838, PIQA, "solution1|solution2", ()),
    ("siqa", "SIQA", "SIQA", "social_i_qa", 1954, ANSWER_1_TO_5, "answer1..answer5",
     ("social_i_qa", "socialiqa")),
    ("hellaswag", "HellaSwag", "HellaSwag", "hellaswag", 10042, HELLASWAG, "ending1..ending4", ()),
    ("winogrande", "WinoGrande", "WinoGrande", "winogrande", 1267, WINOGRANDE, "option1|option2", ()),
    ("arc_challenge", "ARC-Challenge", "ARC-c", "ARC-Challenge", 1172, ANSWER_1_TO_5,
     "answer1..answer5", ("arc_c",)),
    ("arc_easy", "ARC-Easy", "ARC-e", "ARC-Easy", 2376, ANSWER_1_TO_5, "answer1..answer5", ("arc_e",)),
    ("obqa", "OBQA", "OBQA", "openbookqa", 500, ANSWER_1_TO_5, "answer1..answer5",
     ("openbookqa", "openbook_qa")),
)

for _name, _display, _short, _folder, _size, _rule, _labels, _aliases in _COMMONSENSE:
    register(Task(
        name=_name, family="commonsense", display=_display, short=_short, metric="accuracy",
        rule=_rule, read=read_llm_adapters, to_example=llm_adapters_example, paper_size=_size,
        folders=(_folder,), aliases=_aliases,
        description=f"first label ({_labels}) in the output, exact match",
    ))
