"""Prompts for generated records, in the project's own words: one short, focused request per turn, each
answered as a small JSON document (see generation.TURN_SCHEMAS)."""

from __future__ import annotations

# Without a system turn the inference service answers as the Socratic tutor; the student side needs its own.
STUDENT_QUESTION_SYSTEM = "You write questions that students ask."

STUDENT_REPLY_SYSTEM = "You write what a student answers to a tutor, in one or two sentences."

# The small model loops on "What is the answer to the question: ..." when asked to "write a question a
# student might ask"; giving the opening words gives real questions. Starters also vary the questions
# between attempts, so greedy decoding does not write the same dialogue again.
QUESTION_STARTERS = ("Why", "How", "What happens when", "Why do", "How can", "What is the difference between")

SYNTHETIC_QUESTION_TEMPLATE = """Write one question that a curious student asks a tutor about {TOPIC}.
The question starts with '{STARTER}'."""

GROUNDED_QUESTION_TEMPLATE = """Here is a lesson:

{PASSAGE}

Write one question a student asks about this lesson. The question starts with '{STARTER}'."""

TUTOR_SYSTEM = """You are a Socratic tutor talking with a student about {TOPIC}.
Do not give the answer. Reply with one short guiding question that helps the student think it through."""

GROUNDED_TUTOR_SYSTEM = """You are a Socratic tutor. Use only the lesson passage below.
Do not give the answer. Ask one short guiding question that helps the student think, using the words of the passage.

Passage:
{PASSAGE}"""

STUDENT_ANSWER_TEMPLATE = """A tutor asked a student this question about {TOPIC}:

{QUESTION}

Write the student's short reply: an honest attempt in one sentence."""

STUDENT_FOLLOW_UP_TEMPLATE = """A tutor asked a student this question about a lesson:

{QUESTION}

Lesson passage:
{PASSAGE}

Write the student's short reply: an honest attempt using the passage. Reply with the student's words only."""


def synthetic_subject(topic: str) -> str:
    return "a school subject of your choice" if topic.strip().lower() == "general" else topic.strip()
