"""What the word count handlers share: how to count words, and the top list."""

import re
from collections import Counter

TOP = 10

# Words too common to be interesting in a "top words" list. They still count
# towards the total number of words.
STOPWORDS = set("""
    a an and are as at be but by for from had has have he her his i in is it its
    me my no not of on or she so that the their them they this to was we were
    when where which who will with you your
""".split())

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def count_words(text):
    """(number of words, Counter of the words that are not stopwords)."""
    words = WORD.findall(text.lower())
    return len(words), Counter(word for word in words if word not in STOPWORDS)


def top(counts, n=TOP):
    """The n most frequent words as [[word, count], ...]; ties in alphabetical order."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [[word, count] for word, count in ranked[:n]]
