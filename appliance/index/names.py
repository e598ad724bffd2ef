"""Person names as people type them: folded for matching, split into words.

Stored names keep what the modality sent; ``patient.name_upper`` holds ``fold(name)``
(accents removed, upper case), and queries fold their value the same way, so
"muller", "Müller" and "MÜLLER" match one another in C-FIND, QIDO-RS and the study list.
"""
from __future__ import annotations

import re
import unicodedata

# Letters that do not decompose into a base letter plus accents (NFKD leaves them whole).
_SPECIAL = str.maketrans({"ß": "SS", "ẞ": "SS", "Æ": "AE", "æ": "AE", "Œ": "OE", "œ": "OE", "Ø": "O", "ø": "O",
                          "Ł": "L", "ł": "L", "Đ": "D", "đ": "D", "Ð": "D", "ð": "D", "Þ": "TH", "þ": "TH",
                          "ı": "I"})

# What separates the words of a typed name: spaces, commas and DICOM's component caret.
WORD_SEPARATORS = re.compile(r"[\s,^]+")


def fold(text: str) -> str:
    """``text`` without accents, in upper case ("Müller, Zoë" -> "MULLER, ZOE")."""
    decomposed = unicodedata.normalize("NFKD", str(text or "").translate(_SPECIAL))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def words(typed: str) -> list[str]:
    """The words of a typed name, folded: "Moore, Sara" and "sara moore" -> ["MOORE", "SARA"] / ["SARA", "MOORE"]."""
    return [w for w in WORD_SEPARATORS.split(fold(typed)) if w]
