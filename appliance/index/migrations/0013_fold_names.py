"""Patient names folded for matching: ``patient.name_upper`` becomes the name without accents, in upper
case (appliance/index/names.py), so "muller" finds "MÜLLER". Only names with letters outside ASCII change.

Data only; no schema change.
"""
import unicodedata

# A frozen copy of names.fold at this step (a later change to names.py must not change what this step did).
_SPECIAL = str.maketrans({"ß": "SS", "ẞ": "SS", "Æ": "AE", "æ": "AE", "Œ": "OE", "œ": "OE", "Ø": "O", "ø": "O",
                          "Ł": "L", "ł": "L", "Đ": "D", "đ": "D", "Ð": "D", "ð": "D", "Þ": "TH", "þ": "TH",
                          "ı": "I"})


def _fold(text):
    decomposed = unicodedata.normalize("NFKD", str(text or "").translate(_SPECIAL))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def up(migrator, db):
    rows = db.execute_sql('SELECT "id", "name", "name_upper" FROM "patient"').fetchall()
    for pk, name, stored in rows:
        folded = _fold(name)
        if folded != stored:
            db.execute_sql('UPDATE "patient" SET "name_upper" = ? WHERE "id" = ?', (folded, pk))
