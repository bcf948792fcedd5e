"""`plexray knowledge ...`: build a knowledge base from documents, search it, show what it holds."""

from __future__ import annotations

import argparse
import json

from plexray.settings import add_config_arguments, load_platform_config


def register(subparsers: argparse._SubParsersAction) -> None:
    knowledge = subparsers.add_parser("knowledge", help="knowledge bases for grounded personas: index, search, show")
    commands = knowledge.add_subparsers(dest="knowledge_command", required=True, metavar="SUBCOMMAND")

    index = commands.add_parser("index", help="documents (Markdown, text, HTML, PDF; files or directories) -> the "
                                              "knowledge base NAME under knowledge.root (re-indexes changed ones only)")
    index.add_argument("documents", nargs="+", help="files, directories or URIs; these documents are the base")
    index.add_argument("--name", required=True, help="knowledge base name (what personas name)")
    index.add_argument("--dense", action="store_true", help="also embed passages (knowledge.embeddings endpoint)")
    index.add_argument("--workers", type=int, default=None, help="Ray Data tasks at once (default knowledge.index_workers)")
    add_config_arguments(index)
    index.set_defaults(handler=_index)

    search = commands.add_parser("search", help="the passages a query retrieves")
    search.add_argument("name", help="knowledge base name (as given to `knowledge index --name`)")
    search.add_argument("query", help="what to look for, in words (quote it)")
    search.add_argument("--top-k", type=int, default=3, help="how many passages to print")
    search.add_argument("--mode", choices=("lexical", "dense"), default="lexical",
                        help="lexical: BM25 over the words; dense: embedding similarity (needs an index built with "
                             "--dense)")
    add_config_arguments(search)
    search.set_defaults(handler=_search)

    show = commands.add_parser("show", help="a knowledge base's documents, passages and skipped documents")
    show.add_argument("name", help="knowledge base name")
    show.add_argument("--json", action="store_true", help="print it as one JSON object (for programs), each "
                                                          "passage's whole text included")
    add_config_arguments(show)
    show.set_defaults(handler=_show)


def _index(args: argparse.Namespace) -> int:
    from plexray.knowledge.indexer import index_documents

    summary = index_documents(args.documents, args.name, load_platform_config(args).knowledge, args.dense,
                              args.workers)
    print(json.dumps(summary, indent=2))
    return 0 if summary["passages"] else 1  # an empty base is of no use to a persona


def _search(args: argparse.Namespace) -> int:
    from plexray.knowledge.retrieval import KnowledgeBase

    base = KnowledgeBase.open(load_platform_config(args).knowledge, args.name)
    print(json.dumps([passage.to_json() for passage in base.search(args.query, args.top_k, args.mode)], indent=2))
    return 0


def _show(args: argparse.Namespace) -> int:
    from plexray.knowledge.retrieval import KnowledgeBase

    contents = KnowledgeBase.open(load_platform_config(args).knowledge, args.name).contents()
    print(json.dumps(contents, indent=2) if args.json else contents_text(contents))
    return 0


PREVIEW_CHARS = 100  # of a passage's text in `knowledge show`: enough to recognise it on one line


def contents_text(contents: dict) -> str:
    """A base's contents (KnowledgeBase.contents) for reading: a header, then each document with its
    passages (id, heading, the start of its text), then the skipped documents and why."""
    dense = contents["dense"]
    lines = [f"{contents['name']}: {_count(len(contents['documents']), 'document')}, "
             f"{_count(contents['passages'], 'passage')}, "
             + (f"vectors of {dense['model']} ({dense['dim']} dimensions)" if dense else "no vectors (lexical only)")
             + f"; updated {contents['updated']}", f"  at {contents['directory']}"]
    for document in contents["documents"]:
        passages = document["passages"]
        title = f"'{document['title']}'" if document["title"] else "(no heading)"
        lines += ["", document["source"], f"  {title}, {document['kind']}, {_count(len(passages), 'passage')}, "
                                          f"sha256 {(document['hash'] or '?')[:12]}"]
        for passage in passages:
            body = passage["text"].removeprefix(f"{passage['section']}: ") if passage["section"] else passage["text"]
            preview = body if len(body) <= PREVIEW_CHARS else body[:PREVIEW_CHARS].rstrip() + "..."
            lines.append(f"  {passage['id']}  [{passage['section']}] {preview}" if passage["section"]
                         else f"  {passage['id']}  {preview}")
    skipped = contents["skipped"]
    lines += ["", f"skipped at the last index run: {len(skipped)}" if skipped else "skipped: none"]
    lines += [f"  {entry['source']}: {entry['reason']}" for entry in skipped]
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
