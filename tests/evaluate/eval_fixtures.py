"""Small test files in each benchmark family's real field layout, written by the tests themselves.

LLM-Adapters test files (math, commonsense): a JSON list of {instruction, input, output, answer} in
folders named like LLM-Adapters' ``dataset/`` (gsm8k, SVAMP, AQuA, boolq, social_i_qa, ARC-Easy,
...). Instruction-following files: JSON Lines of {instruction, input, output} where output is a
string or a list of references, in MiniLLM's ``data/`` layout (dolly/valid.jsonl, sinst/11_/...).
"""

import json
from pathlib import Path

# Prompts for the generation tests: varied lengths, so batches are padded.
PROMPTS = [
    "Tom has 3 apples.",
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\nAna has 12 pens and gives 5 to Li. How many are left?\n\n"
    "### Response:\n",
    "x",
    "How many coins does Sara have in 4 boxes with 7 coins each?",
    "1 2 3 4 5 6 7 8 9",
    "The answer is",
    "Omar shares 36 cards equally among 4 friends.",
    "Zoe",
    "Mia has 60 eggs, loses 35 of them, and then finds 29 more.",
    "Ravi buys 3 packs with 9 balls in each.",
    "### Instruction:\nadd 2 and 2\n\n### Response:\n",
    "Lena has 48 stamps.",
    "Ida has 5 jars.",
    "Ben gives Max 7 more toys. How many toys does Max have now? Max starts with",
    "cups cups cups",
    "Tom and Ana put 20 shells together and split them into 5 bags.",
    "Sara",
    "What is 9 * 8?",
]

MATH_RECORDS = {
    "gsm8k": [
        {"instruction": "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning "
                        "and bakes muffins for her friends every day with four. She sells the remainder "
                        "at the farmers' market daily for $2 per fresh duck egg. How much in dollars "
                        "does she make every day at the farmers' market?",
         "input": "", "output": "16 - 3 - 4 = 9 eggs; 9 * 2 = 18. The answer is 18.", "answer": "18"},
        {"instruction": "A robe takes 2 bolts of blue fiber and half that much white fiber. How many "
                        "bolts in total does it take?",
         "input": "", "output": "2 + 1 = 3. The answer is 4.", "answer": "3"},  # output's number is wrong
    ],
    "SVAMP": [{"instruction": "Jack had 142 pencils. Jack gave 31 pencils to Dorothy. How many pencils "
                              "does Jack have now?", "input": "", "output": "", "answer": "111.0"}],
    "MultiArith": [{"instruction": "A waiter had 14 customers. 3 left. How many remain?", "input": "",
                    "output": "", "answer": "11.0"}],
    "SingleEq": [{"instruction": "Sam had 1,200 dollars and spent 450.5. How much is left?", "input": "",
                  "output": "", "answer": "749.5"}],
    "AddSub": [{"instruction": "The temperature fell from 3 to -5 degrees. What was the change?",
                "input": "", "output": "", "answer": "-8"}],
    "AQuA": [{"instruction": "A car runs 10 km in 15 minutes. What is its speed in km/h? Answer Choices: "
                             "(A) 30 (B) 35 (C) 40 (D) 45 (E) 50", "input": "", "output": "",
              "answer": "C"}],
}

COMMONSENSE_RECORDS = {
    "boolq": [{"instruction": "Please answer the following question with true or false, question: is "
                              "the sky blue?\n\nAnswer format: true/false", "input": "",
               "output": "the correct answer is true", "answer": "true"}],
    "piqa": [{"instruction": "Please choose the correct solution to the question: open a jar\n\n"
                             "Solution1: twist the lid\n\nSolution2: eat the lid\n\nAnswer format: "
                             "solution1/solution2", "input": "", "output": "the correct answer is solution1",
              "answer": "solution1"}],
    "social_i_qa": [{"instruction": "Please choose the correct answer to the question: Why did Tracy "
                                    "smile?\n\nAnswer1: happy Answer2: sad Answer3: bored\n\nAnswer format: "
                                    "answer1/answer2/answer3", "input": "",
                     "output": "the correct answer is answer1", "answer": "answer1"}],
    "hellaswag": [{"instruction": "Please choose the correct ending to complete the given sentence: A man "
                                  "sits down\n\nEnding1: and eats. Ending2: and flies. Ending3: and swims. "
                                  "Ending4: and sings.\n\nAnswer format: ending1/ending2/ending3/ending4",
                   "input": "", "output": "the correct answer is ending1", "answer": "ending1"}],
    "winogrande": [{"instruction": "Please choose the correct answer to fill in the blank to complete the "
                                   "given sentence: The cup fit in the box because _ was small.\n\nOption1: "
                                   "cup Option2: box Answer format: option1/option2", "input": "",
                    "output": "the correct answer is option1", "answer": "option1"}],
    "ARC-Challenge": [{"instruction": "Please choose the correct answer to the question: Which is a gas?"
                                      "\n\nAnswer1: ice Answer2: steam Answer3: wood Answer4: iron\n\nAnswer "
                                      "format: answer1/answer2/answer3/answer4", "input": "",
                       "output": "the correct answer is answer2", "answer": "answer2"}],
    "ARC-Easy": [{"instruction": "Please choose the correct answer to the question: What melts ice?\n\n"
                                 "Answer1: heat Answer2: cold\n\nAnswer format: answer1/answer2", "input": "",
                  "output": "the correct answer is answer1", "answer": "answer1"}],
    "openbookqa": [{"instruction": "Please choose the correct answer to the question: Plants need\n\n"
                                   "Answer1: light Answer2: dark Answer3: noise Answer4: metal\n\nAnswer "
                                   "format: answer1/answer2/answer3/answer4", "input": "",
                    "output": "the correct answer is answer1", "answer": "answer1"}],
}

INSTRUCT_RECORDS = {
    "dolly/valid.jsonl": [
        {"instruction": "Give three tips for staying healthy.", "input": "",
         "output": "Eat well, sleep enough and exercise."},
        {"instruction": "Summarize the text.", "input": "Cats are small domesticated carnivores.",
         "output": "Cats are small pets."},
    ],
    "self-inst/valid.jsonl": [{"instruction": "Write a haiku about rain.", "input": "",
                               "output": "Soft rain on the roof"}],
    "vicuna/valid.jsonl": [{"instruction": "How can I improve my time management skills?", "input": "",
                            "output": "Plan your day and set priorities."}],
    "sinst/11_/valid.jsonl": [
        {"instruction": "Translate the sentence into French.", "input": "I like cheese.",
         "output": ["J'aime le fromage.", "J'adore le fromage."]},
        {"instruction": "Answer the question.", "input": "What colour is grass?", "output": "green"},
    ],
    "uinst/11_/valid.jsonl": [{"instruction": "List two fruits.", "input": "",
                               "output": ["apple and pear", "banana and kiwi"]}],
}


def write_llm_adapters_dir(root: Path, records: dict | None = None) -> Path:
    """A folder in LLM-Adapters' dataset/ layout: <Folder>/test.json (JSON list)."""
    for folder, rows in (records or {**MATH_RECORDS, **COMMONSENSE_RECORDS}).items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "test.json").write_text(json.dumps(rows, indent=4, ensure_ascii=False), encoding="utf-8")
    return root


def write_instruct_dir(root: Path) -> Path:
    """A folder in MiniLLM's data/ layout: <set>/valid.jsonl (JSON Lines)."""
    for rel, rows in INSTRUCT_RECORDS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return root
