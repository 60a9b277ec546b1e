"""The Alpaca prompt template used by LLM-Adapters (and so by the paper) for training and evaluation.

Training text is ``prompt + output``; the zero-shot evaluation prompt is the same template with the
response left open. The paper's original template string has stray indentation (an accident of its
source file); kdlens reproduces the layout, not the accident. The template is configurable through
:class:`PromptTemplate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdlens.errors import KdlensError


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt layout with and without an ``input`` field; ``{instruction}``/``{input}`` are filled."""

    no_input: str
    with_input: str
    response_marker: str = "### Response:"
    # Generation stops when the model starts a new example.
    stop_strings: tuple[str, ...] = ("### Instruction",)

    def prompt(self, instruction: str, input: str | None = "") -> str:
        """The text up to and including the response marker and its newline."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise KdlensError("a record has an empty or non-string 'instruction'")
        if input:
            return self.with_input.format(instruction=instruction, input=input)
        return self.no_input.format(instruction=instruction)

    def full_text(self, instruction: str, input: str | None, output: str) -> str:
        """The training text: the prompt followed by the gold response."""
        return self.prompt(instruction, input) + output

    def response(self, generated: str) -> str:
        """Cut a generated continuation at the first stop string (the model began a new example)."""
        end = len(generated)
        for stop in self.stop_strings:
            at = generated.find(stop)
            if at != -1:
                end = min(end, at)
        return generated[:end].strip()


ALPACA = PromptTemplate(
    no_input=(
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    ),
    with_input=(
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
)

# Plain text (pretraining): the record's instruction is the whole document; no marker, no stop.
TEXT = PromptTemplate(no_input="{instruction}", with_input="{instruction}\n{input}", response_marker="",
                      stop_strings=())

TEMPLATES = {"alpaca": ALPACA, "text": TEXT}


def get_template(name: str) -> PromptTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KdlensError(
            f"unknown prompt template {name!r}; known: {', '.join(sorted(TEMPLATES))}"
        ) from None
