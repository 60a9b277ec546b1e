"""Instruction-following tasks (MiniLLM/DistiLLM evaluation suite), scored by ROUGE-L F x 100.

Files are JSON Lines of {instruction, input, output}; ``output`` may be a list of references (the
score is the maximum over them). Folder names follow MiniLLM's ``data/`` layout
(``data/dolly/valid.jsonl``, ``data/sinst/11_/valid.jsonl``, ...). The paper gives no set sizes.
"""

from kdlens.eval.tasks.formats import instruct_example, read_instruct
from kdlens.eval.tasks.registry import Task, register

_FILES = ("valid.jsonl", "test.jsonl", "11_/valid.jsonl", "valid.json", "test.json")

# (name, display name, folders, aliases)
_INSTRUCT = (
    ("dolly", "Dolly", ("dolly",), ()),
    ("self_inst", "SelfInst", ("self-inst", "self_inst", "selfinst"), ("self_instruct", "selfinst")),
    ("vicuna", "Vicuna", ("vicuna",), ()),
    ("sinst", "S-NI", ("sinst", "s-ni", "sni"), ("s_ni", "sni", "super_natural_instructions")),
    ("uinst", "UnNI", ("uinst", "unni", "un-ni"), ("unni", "un_ni", "unnatural_instructions")),
)

for _name, _display, _folders, _aliases in _INSTRUCT:
    register(Task(
        name=_name, family="instruct", display=_display, metric="rouge_l", rule=None,
        read=read_instruct, to_example=instruct_example, folders=_folders, files=_FILES,
        aliases=_aliases, description="ROUGE-L F (stemmed), max over references, x100",
    ))
