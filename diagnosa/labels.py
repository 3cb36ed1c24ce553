"""The five diagnostic categories, in clinical order (the order ordinal metrics use), and the ASCII spelling of any
dataset's label where only ASCII goes (pipeline parameter names, job arguments, CloudWatch dimensions)."""
from __future__ import annotations

import unicodedata

HEALTHY = "NO ENFERMO"
MILD = "ENFERMEDAD LEVE"
ACUTE = "ENFERMEDAD AGUDA"
CHRONIC = "ENFERMEDAD CRÓNICA"
TERMINAL = "ENFERMEDAD TERMINAL"

CATEGORIES: tuple[str, ...] = (HEALTHY, MILD, ACUTE, CHRONIC, TERMINAL)
DISEASE_CATEGORIES: tuple[str, ...] = CATEGORIES[1:]


def ascii_words(text: str) -> str:
    """Letters and digits of ``text`` as capitalised ASCII words: accents dropped (Ó → O), any other non-ASCII letter
    or digit written as U+hex (肺 → U80ba), every other character a word break ('ENFERMEDAD CRÓNICA' →
    'EnfermedadCronica'). A dataset's labels have distinct spellings: the pipeline refuses labels that share one."""
    words, word = [], ""
    for char in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(char):
            continue
        if char.isascii() and char.isalnum():
            word += char
        elif not char.isascii() and unicodedata.category(char)[0] in "LN":
            word += f"U{ord(char):04x}"
        else:
            words.append(word)
            word = ""
    words.append(word)
    return "".join(w.capitalize() for w in words if w)
