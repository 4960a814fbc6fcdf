"""Prompts for generated records, in the project's own words."""

from __future__ import annotations

import json

GENERATOR_SYSTEM = "You write training data for a Socratic tutor. You answer with JSON only."

# A worked example on a topic no request uses, so a reply that copies it can be recognised and dropped.
EXAMPLE_CONVERSATION = [
    {"role": "user", "content": "Why is my shadow longer in the evening?"},
    {"role": "assistant", "content": "Good question! Where is the sun in the sky in the evening compared with noon?"},
]

SYNTHETIC_TEMPLATE = """Write {NUM_CONVERSATIONS} short conversation(s) between a student and a tutor about {TOPIC}.
Each conversation has {NUM_EXCHANGES} exchange(s): the student speaks, then the tutor replies.

How the tutor teaches:
- never states the final answer; asks one probing question at a time instead
- asks the student to clarify what they mean and to name their assumptions
- asks for evidence, reasons or an example
- invites another point of view and asks what would follow from an idea
- asks how the student reached their idea
- is warm and encouraging, one to three sentences per turn

Answer with a JSON array of conversations. Each conversation is an array of turns with "role"
("user" for the student, "assistant" for the tutor) and "content". Example with one exchange about shadows:
[{EXAMPLE}]

Now write the JSON for {TOPIC}."""

GENERAL_TOPIC = "a different school subject for each conversation (for example maths, science, history, language)"

# Without a system turn the inference service answers as the Socratic tutor; the student side needs its own.
# The small model loops on "What is the answer to the question: ..." when asked to "write a question a
# student might ask"; asking for a Why/How question gives real questions.
STUDENT_QUESTION_SYSTEM = "You write questions that students ask."

STUDENT_QUESTION_TEMPLATE = """Here is a lesson:

{PASSAGE}

Write one question about this lesson that starts with 'Why' or 'How'."""

STUDENT_REPLY_SYSTEM = "You write what a student answers to a tutor, in one or two sentences."

GROUNDED_TUTOR_SYSTEM = """You are a Socratic tutor. Use only the lesson passage below.
Do not give the answer. Ask one short guiding question that helps the student think, using the words of the passage.

Passage:
{PASSAGE}"""

STUDENT_FOLLOW_UP_TEMPLATE = """A tutor asked a student this question about a lesson:

{QUESTION}

Lesson passage:
{PASSAGE}

Write the student's short reply: an honest attempt using the passage. Reply with the student's words only."""


# Later requests of one build say which set they are: with greedy decoding the same prompt would give
# the same reply again.
VARIATION = "\nThis is set {SET}: use different student questions and situations than in earlier sets."


def synthetic_prompt(topic: str, num_conversations: int, num_exchanges: int, variation: int = 0) -> str:
    subject = GENERAL_TOPIC if topic.strip().lower() == "general" else topic.strip()
    prompt = SYNTHETIC_TEMPLATE.format(
        NUM_CONVERSATIONS=num_conversations,
        NUM_EXCHANGES=num_exchanges,
        TOPIC=subject,
        EXAMPLE=json.dumps(EXAMPLE_CONVERSATION),
    )
    return prompt + VARIATION.format(SET=variation + 1) if variation else prompt


# Turn-by-turn generation: one short, focused request per turn, each answered as a small JSON document
# (see generation.TURN_SCHEMAS). Starters vary the student's questions between attempts, so greedy
# decoding does not write the same dialogue again.
QUESTION_STARTERS = ("Why", "How", "What happens when", "Why do", "How can", "What is the difference between")

SYNTHETIC_QUESTION_TEMPLATE = """Write one question that a curious student asks a tutor about {TOPIC}.
The question starts with '{STARTER}'."""

GROUNDED_QUESTION_TEMPLATE = """Here is a lesson:

{PASSAGE}

Write one question a student asks about this lesson. The question starts with '{STARTER}'."""

TUTOR_SYSTEM = """You are a Socratic tutor talking with a student about {TOPIC}.
Do not give the answer. Reply with one short guiding question that helps the student think it through."""

STUDENT_ANSWER_TEMPLATE = """A tutor asked a student this question about {TOPIC}:

{QUESTION}

Write the student's short reply: an honest attempt in one sentence."""


def synthetic_subject(topic: str) -> str:
    return "a school subject of your choice" if topic.strip().lower() == "general" else topic.strip()
