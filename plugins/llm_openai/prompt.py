"""What the model is told and how its answer is judged: passages in, citations out.

The system prompt confines the model to the numbered passages, asks it to cite them as
``[n]`` and to answer exactly :data:`REFUSAL` when they do not answer. An answer is
refused when it says so, when it is empty, or when it cites no passage it was given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from kefu.core.types import GeneratedAnswer, KnowledgeAnswer

#: What the model answers when the passages do not answer the question.
REFUSAL = "NO_ANSWER"

SYSTEM_PROMPT = f"""\
You are the customer-service assistant of a company's website. Answer the visitor's \
question using ONLY the numbered help-article passages below. Do not use any other \
knowledge, do not guess, do not invent policies, prices, dates or links.
Cite every passage you use with its number in square brackets, like [1] or [2], right \
after the sentence it supports. Keep the answer short (at most a few sentences) and \
answer in {{language}}.
If the passages do not answer the question, reply with exactly {REFUSAL} and nothing else.\
"""

LANGUAGES = {"zh": "Chinese (简体中文)", "en": "English"}
#: ``[1]``, ``[1, 3]``, ``[1][2]``, and the full-width brackets Chinese text uses
CITATION = re.compile(r"[\[【［]\s*(\d+(?:\s*[,，、]\s*\d+)*)\s*[\]】］]")  # noqa: RUF001


def messages(
    question: str, passages: Sequence[KnowledgeAnswer], lang: str, max_chars: int
) -> list[dict[str, str]]:
    """The chat messages of one request: the rules, the passages, the question."""
    numbered = "\n\n".join(
        f"[{n}] {p.title}\n{p.text[:max_chars]}" for n, p in enumerate(passages, 1)
    )
    system = SYSTEM_PROMPT.format(language=LANGUAGES.get(lang, LANGUAGES["en"]))
    return [
        {"role": "system", "content": f"{system}\n\nPassages:\n\n{numbered}"},
        {"role": "user", "content": question},
    ]


def estimate_tokens(payload: Any) -> int:
    """A conservative token count for budgets when the server reports no usage: about
    four characters per token in English, one per character in Chinese."""
    text = payload if isinstance(payload, str) else str(payload)
    wide = sum(1 for ch in text if ord(ch) > 0x2E7F)
    return (len(text) - wide) // 4 + wide + 1


def may_be_refusal(text: str) -> bool:
    """The text so far may still turn out to be the refusal marker: not shown yet."""
    head = text.strip()
    return REFUSAL.startswith(head) or head.startswith(REFUSAL)


def judge(text: str, passages: int, tokens: int) -> GeneratedAnswer:
    """The provider's answer, or its refusal: no marker, and at least one valid citation."""
    answer = text.strip()
    if not answer:
        return GeneratedAnswer("", refused=True, reason="empty", tokens=tokens)
    if REFUSAL in answer:
        return GeneratedAnswer("", refused=True, reason="no_answer", tokens=tokens)
    cited = sorted(
        {
            int(n) - 1
            for group in CITATION.findall(answer)
            for n in re.split(r"[^\d]+", group)
            if n and 1 <= int(n) <= passages
        }
    )
    if not cited:
        return GeneratedAnswer("", refused=True, reason="uncited", tokens=tokens)
    return GeneratedAnswer(answer, tuple(cited), tokens=tokens)
