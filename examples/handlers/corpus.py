"""The offline "web": a folder of HTML pages, corpus/pages/<id>.html, and the
search engine over it.

The searcher and the downloader read it through this module, both in the
handler program (search_program.py) and in the one-shot commands.
"""

import os
import re
from html.parser import HTMLParser

PAGES_DIR = os.path.join("corpus", "pages")
PAGE_ID = re.compile(r"[a-z0-9][a-z0-9-]*")


class CorpusMissing(Exception):
    """The corpus is not where the handlers look for it."""


class Page:
    def __init__(self, page_id, html):
        self.id = page_id
        self.html = html
        self.title, self.text = _title_and_text(html)


def page_ids():
    """Every page id in the corpus, sorted."""
    if not os.path.isdir(PAGES_DIR):
        raise CorpusMissing(f"no corpus at {os.path.join(os.getcwd(), PAGES_DIR)}: "
                            "run the handlers from the folder of handlers.toml")
    names = os.listdir(PAGES_DIR)
    return sorted(name[: -len(".html")] for name in names if name.endswith(".html"))


def path_of(page_id):
    return os.path.join(PAGES_DIR, f"{page_id}.html")


def load(page_id):
    """The page with this id, or None when the corpus has no such page."""
    if not isinstance(page_id, str) or not PAGE_ID.fullmatch(page_id):
        return None
    try:
        with open(path_of(page_id), encoding="utf-8") as file:
            return Page(page_id, file.read())
    except FileNotFoundError:
        return None


def search(query):
    """The ids of the pages that match `query`, best match first.

    A page matches when every word of the query appears in its title or body
    as a whole word, ignoring case ("rust" matches "Rust's", not "trust").
    Pages that mention the words more often rank higher; ties go by id.
    """
    words = re.findall(r"\w+", query.lower())
    hits = {}
    for page_id in page_ids():
        page = load(page_id)
        haystack = f"{page.title} {page.text}".lower()
        counts = [len(re.findall(rf"\b{re.escape(word)}\b", haystack)) for word in words]
        if all(counts):
            hits[page_id] = sum(counts)
    return sorted(hits, key=lambda page_id: (-hits[page_id], page_id))


class _TextCollector(HTMLParser):
    """Collects the <title> and the visible text of a page."""

    def __init__(self):
        super().__init__()
        self.title = []
        self.text = []
        self._open = []

    def handle_starttag(self, tag, attrs):
        self._open.append(tag)

    def handle_endtag(self, tag):
        if tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data):
        if "title" in self._open:
            self.title.append(data)
        elif not {"script", "style"} & set(self._open):
            self.text.append(data)


def _title_and_text(html):
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    title = " ".join("".join(collector.title).split())
    text = " ".join(" ".join(collector.text).split())
    return title, text
