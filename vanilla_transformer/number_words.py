"""The embedded translation task: English number words -> German number words, generated in code.

It needs real reordering, not copying: German puts units before tens ("forty-seven" ->
"siebenundvierzig") and writes the whole number as one compound word, so a model must learn to
move and merge pieces, e.g. "two thousand three hundred forty-seven" -> "zweitausenddreihundertsiebenundvierzig".
"""

from __future__ import annotations

import random

_EN_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_DE_ONES = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn", "elf",
            "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn", "neunzehn"]
_DE_TENS = ["", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"]
MAX_NUMBER = 999_999


def english(n: int) -> str:
    """``347 -> "three hundred forty-seven"`` (American style, no "and"), for 0 <= n <= 999,999.

    Example:
        >>> from vanilla_transformer.number_words import english
        >>> english(347)
        'three hundred forty-seven'
        >>> english(2347)
        'two thousand three hundred forty-seven'
        >>> english(1_000_000)
        Traceback (most recent call last):
        ...
        ValueError: n=1000000 is outside [0, 999999]
    """
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"n={n} is outside [0, {MAX_NUMBER}]")
    if n < 20:
        return _EN_ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _EN_TENS[tens] + (f"-{_EN_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_EN_ONES[hundreds]} hundred" + (f" {english(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{english(thousands)} thousand" + (f" {english(rest)}" if rest else "")


def german(n: int) -> str:
    """``347 -> "dreihundertsiebenundvierzig"``, for 0 <= n <= 999,999: one compound word, units before tens.

    Example:
        >>> from vanilla_transformer.number_words import german
        >>> german(347)
        'dreihundertsiebenundvierzig'
        >>> german(2347)
        'zweitausenddreihundertsiebenundvierzig'
        >>> german(101), german(1)  # "ein" inside a compound, "eins" at the end
        ('einhunderteins', 'eins')
    """
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"n={n} is outside [0, {MAX_NUMBER}]")
    if n == 0:
        return "null"
    return _german(n, final=True)


def _german(n: int, final: bool) -> str:
    # "eins" only stands alone at the very end ("einhunderteins"); inside compounds it is "ein".
    if n == 0:
        return ""
    if n < 20:
        return "ein" if n == 1 and not final else _DE_ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return (("ein" if ones == 1 else _DE_ONES[ones]) + "und" if ones else "") + _DE_TENS[tens]
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _german(hundreds, final=False) + "hundert" + _german(rest, final)
    thousands, rest = divmod(n, 1000)
    return _german(thousands, final=False) + "tausend" + _german(rest, final)


def make_splits(num_train: int = 12000, num_test: int = 500, max_number: int = 99_999, seed: int = 0):
    """Disjoint random train / held-out sets of ``(english, german)`` pairs over 0..max_number.

    Args:
        num_train: number of training pairs.
        num_test: number of held-out pairs (no number appears in both sets).
        max_number: largest number drawn; at most ``MAX_NUMBER``.
        seed: seed of the sampling; the same seed gives the same splits.

    Returns:
        ``(train, test)``: two lists of ``(english(n), german(n))`` string pairs.

    Example:
        >>> from vanilla_transformer.number_words import english, german, make_splits
        >>> train, test = make_splits(num_train=20, num_test=5, max_number=99)
        >>> len(train), len(test), bool(set(train).isdisjoint(test))
        (20, 5, True)
        >>> all(pair in [(english(n), german(n)) for n in range(100)] for pair in train + test)
        True
        >>> make_splits(num_train=20, num_test=5, max_number=99) == (train, test)  # deterministic
        True
    """
    if num_train + num_test > max_number + 1:
        raise ValueError("more examples asked for than numbers in range")
    numbers = random.Random(seed).sample(range(max_number + 1), num_train + num_test)
    pairs = [(english(n), german(n)) for n in numbers]
    return pairs[:num_train], pairs[num_train:]
