"""Prompt templates (what the model reads) and response cuts (where its answer ends).

Training text is ``train_prompt + output``; the zero-shot evaluation prompt is the template with the
response left open (:meth:`PromptTemplate.prompt`).

Templates (:func:`get_template`):

- ``alpaca`` (default for new studies): the LLM-Adapters Alpaca layout without the stray
  indentation of the paper's source file; training and evaluation prompts are the same text.
- ``alpaca-paper``: the paper's bytes, exactly as its triple-quoted f-strings build them
  (``generate_prompt`` in its finetune.py, evaluate.py and commonsense_evaluate.py): a space after
  "request." (two in the training text without an input, none in the evaluation prompt with one),
  16-space indents, and the evaluation prompt ends with ``"### Response:\\n"`` plus 16 spaces. Its
  training layout differs from its evaluation layout (the training text's blank lines hold 16
  spaces), as in the paper's code. Models fine-tuned by the paper were conditioned on these bytes;
  the paper presets use it.

Response cuts (:func:`get_response_cut`), applied to a generated continuation:

- ``instruction`` (default): the continuation up to the first ``"### Instruction"`` (the model began a
  new example), stripped; generation stops there.
- ``paper``: the paper's rule: decode prompt + generation and take
  ``.split("### Response:")[1].strip()``, i.e. the text up to the NEXT ``"### Response:"``. When a
  model runs on into a new example the two differ: ``"The answer is 5.\\n\\n### Instruction:\\nWhat is
  3 + 4?\\n\\n### Response:\\nThe answer is 7."`` is ``5`` under ``instruction`` and ``4`` under
  ``paper``. Generation stops at the next ``"### Response:"``, which changes nothing before it. kdlens
  decodes the continuation without special tokens (the paper's math script keeps them, e.g. a
  trailing ``<|endoftext|>``, which holds no digit or answer letter, so no extracted answer differs).

Tests: ``python -m pytest tests/data/test_paper_bytes.py -q`` (the paper's f-strings and its cut,
transcribed, are the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

from kdlens.errors import KdlensError


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt layout with and without an ``input`` field; ``{instruction}``/``{input}`` are filled.

    ``no_input``/``with_input`` are the evaluation prompts (response left open);
    ``train_no_input``/``train_with_input`` the training prompts the output is appended to, where
    they differ (None: the same as the evaluation prompts).
    """

    no_input: str
    with_input: str
    train_no_input: str | None = None
    train_with_input: str | None = None

    @staticmethod
    def _fill(no_input: str, with_input: str, instruction: str, input: str | None) -> str:
        if not isinstance(instruction, str) or not instruction.strip():
            raise KdlensError("a record has an empty or non-string 'instruction'")
        if input:
            return with_input.format(instruction=instruction, input=input)
        return no_input.format(instruction=instruction)

    def prompt(self, instruction: str, input: str | None = "") -> str:
        """The evaluation prompt: the text up to and including the response marker."""
        return self._fill(self.no_input, self.with_input, instruction, input)

    def train_prompt(self, instruction: str, input: str | None = "") -> str:
        """The training text before the gold response (the part ``train_on_inputs=False`` masks)."""
        return self._fill(self.train_no_input or self.no_input, self.train_with_input or self.with_input,
                          instruction, input)

    def full_text(self, instruction: str, input: str | None, output: str) -> str:
        """The training text: the training prompt followed by the gold response."""
        return self.train_prompt(instruction, input) + output


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

_HEAD = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
_HEAD_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
               "context. Write a response that appropriately completes the request.")
_IND = " " * 16  # the indentation of the paper's triple-quoted f-strings

ALPACA_PAPER = PromptTemplate(
    # evaluate.py / commonsense_evaluate.py generate_prompt(instruction, input_text)
    no_input=(f"{_HEAD} \n\n{_IND}### Instruction:\n{_IND}{{instruction}}\n\n"
              f"{_IND}### Response:\n{_IND}"),
    with_input=(f"{_HEAD_INPUT}\n\n{_IND}### Instruction:\n{_IND}{{instruction}}\n\n"
                f"{_IND}### Input:\n{_IND}{{input}}\n\n{_IND}### Response:\n{_IND}"),
    # finetune.py generate_prompt(data_point), whose blank lines hold the indentation too
    train_no_input=(f"{_HEAD}  \n\n{_IND}### Instruction:\n{_IND}{{instruction}}\n{_IND}\n"
                    f"{_IND}### Response:\n{_IND}"),
    train_with_input=(f"{_HEAD_INPUT} \n\n{_IND}### Instruction:\n{_IND}{{instruction}}\n{_IND}\n"
                      f"{_IND}### Input:\n{_IND}{{input}}\n{_IND}\n{_IND}### Response:\n{_IND}"),
)

# Plain text (pretraining on a corpus): the record's instruction is the whole document.
TEXT = PromptTemplate(no_input="{instruction}", with_input="{instruction}\n{input}")

TEMPLATES = {"alpaca": ALPACA, "alpaca-paper": ALPACA_PAPER, "text": TEXT}


def get_template(name: str) -> PromptTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KdlensError(
            f"unknown prompt template {name!r}; known: {', '.join(sorted(TEMPLATES))}"
        ) from None


@dataclass(frozen=True)
class ResponseCut:
    """Where a generated response ends. ``stop_strings``: generation may stop once the continuation
    holds one of them (nothing the cut keeps comes after them)."""

    name: str
    stop_strings: tuple[str, ...]

    def __call__(self, prompt: str, continuation: str) -> str:
        """The response of ``continuation`` (generated after ``prompt``)."""
        if self.name == "paper":
            parts = (prompt + continuation).split("### Response:")
            if len(parts) < 2:
                raise KdlensError("the paper's response cut needs '### Response:' in the prompt or the "
                                  "generation; use a template that has it or response_cut='instruction'")
            return parts[1].strip()
        end = len(continuation)
        for stop in self.stop_strings:
            at = continuation.find(stop)
            if at != -1:
                end = min(end, at)
        return continuation[:end].strip()


RESPONSE_CUTS = {
    "instruction": ResponseCut("instruction", ("### Instruction",)),
    "paper": ResponseCut("paper", ("### Response:",)),
}


def get_response_cut(name: str) -> ResponseCut:
    try:
        return RESPONSE_CUTS[name]
    except KeyError:
        raise KdlensError(
            f"unknown response cut {name!r}; known: instruction (kdlens: up to the first "
            "'### Instruction'), paper (the paper's split('### Response:')[1].strip())"
        ) from None
