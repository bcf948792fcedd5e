"""Documents -> passages -> lexical and dense indexes: parsing, skipping, incremental re-indexing, search."""

import json
import shutil

import pytest

from knowledge_helpers import BAD_DOCS, DOCS, EmbeddingsServer, pdf_of_lines, process_in_loop
from plexray.knowledge.chunking import chunk_text, document_title
from plexray.knowledge.config import ChunkingConfig, EmbeddingsConfig, KnowledgeConfig
from plexray.knowledge.documents import UnreadableDocument, html_text, parse_document
from plexray.knowledge.errors import KnowledgeError
from plexray.knowledge.indexer import index_documents
from plexray.knowledge.lexical import match_expression
from plexray.knowledge.retrieval import KnowledgeBase


def test_html_keeps_visible_text_and_headings():
    text = html_text((DOCS / "policies.html").read_text())
    assert "console.log" not in text and "font-family" not in text
    assert "## Refunds" in text
    assert "Ten stamps earn a free drink of any size." in text


def test_markdown_passages_carry_their_heading_and_plain_text():
    chunks = chunk_text("menu.md", (DOCS / "menu.md").read_text(), ChunkingConfig(max_words=40))
    pastries = [c for c in chunks if c.section == "Pastries"]
    assert pastries and all(c.text.startswith("Pastries: ") for c in pastries)
    assert all(len(c.text.split()) <= 40 for c in chunks)
    espresso = next(c for c in chunks if c.section == "Espresso drinks")
    assert "- " not in espresso.text and "Cappuccino, 8 ounces, with whole milk foam: $4.20." in espresso.text


def test_pdf_and_plain_text_headings_stay_apart_from_the_text_after_them():
    pdf = pdf_of_lines([
        ("bold", 16, "Harbor Lane Coffee"),  # the title: larger and bold
        ("bold", 13, "Opening hours"),
        ("regular", 11, "We open at 7 am on weekdays and at 8 am on"),  # a sentence wrapped over three lines
        ("regular", 11, "weekends. Parking is free for half an hour behind"),
        ("regular", 11, "the store."),
        ("regular", 11, "Allergen information"),  # set like the body: a heading by its place and shape
        ("regular", 11, "All milk drinks contain dairy unless you choose oat milk."),
        ("bold", 11, "Cakes"),
        ("regular", 11, "Lemon drizzle 4.20"),  # a list of short lines: text, not headings
        ("regular", 11, "Carrot cake 4.50"),
    ])
    document = parse_document("cafe.pdf", pdf)
    chunks = chunk_text("cafe.pdf", document.text, ChunkingConfig())
    assert [chunk.text for chunk in chunks] == [
        "Opening hours: We open at 7 am on weekdays and at 8 am on weekends. Parking is free for half an hour "
        "behind the store.",
        "Allergen information: All milk drinks contain dairy unless you choose oat milk.",
        "Cakes: Lemon drizzle 4.20 Carrot cake 4.50"]
    assert document_title(document.text) == "Harbor Lane Coffee"
    # The shipped PDF sets its heading like its body; plain text has its headings as paragraphs of their own.
    shipped = chunk_text("a.pdf", parse_document("a.pdf", (DOCS / "allergens.pdf").read_bytes()).text,
                         ChunkingConfig())
    assert [chunk.section for chunk in shipped] == ["Allergen information"]
    assert shipped[0].text.startswith("Allergen information: All milk drinks contain dairy")
    hours = chunk_text("hours.txt", parse_document("hours.txt", (DOCS / "hours.txt").read_bytes()).text,
                       ChunkingConfig())
    assert [(chunk.section, chunk.text.split(": ", 1)[1][:18]) for chunk in hours] == [
        ("Opening hours", "Harbor Lane Coffee"), ("Parking", "Customers park fre")]
    listed = "Drinks\n\nEspresso 2.80\n\nLatte 3.50\n\nWe also serve tea.\n\nParking\n\nFree for an hour.\n"
    assert [chunk.text for chunk in chunk_text("list.txt", parse_document("list.txt", listed.encode()).text,
                                               ChunkingConfig())] == [
        "Drinks Espresso 2.80 Latte 3.50 We also serve tea.", "Parking: Free for an hour."]


def test_pdf_text_and_unreadable_documents_name_the_reason():
    assert "tree nuts" in parse_document("a.pdf", (DOCS / "allergens.pdf").read_bytes()).text
    reasons = {}
    for path in sorted(BAD_DOCS.iterdir()):
        with pytest.raises(UnreadableDocument) as failure:
            parse_document(str(path), path.read_bytes())
        reasons[path.name] = str(failure.value)
    assert reasons == {"broken.pdf": reasons["broken.pdf"], "empty.md": "no text in it",
                       "latin1.txt": "not UTF-8 text (invalid continuation byte at byte 3)",
                       "notes.docx": reasons["notes.docx"]}
    assert reasons["broken.pdf"].startswith("broken PDF") and "unsupported file type" in reasons["notes.docx"]


def test_query_words_cannot_inject_fts5_syntax():
    assert match_expression('wifi" OR password NEAR(x') == '"wifi" OR "password" OR "near" OR "x"'
    assert match_expression("?! --") is None
    assert match_expression("What is the price of a latte?") == '"price" OR "latte"'
    assert match_expression("what is it") == '"what" OR "is" OR "it"'  # nothing else to search for


def test_index_skips_unreadable_documents_and_retrieves(tmp_path):
    config = KnowledgeConfig(root=str(tmp_path))
    missing = [str(tmp_path / "gone.md"), str(tmp_path / "gone.docx"), str(tmp_path / "gone"),
               f"file://{tmp_path}/gone-uri"]
    summary = index_documents([str(DOCS), str(BAD_DOCS), str(BAD_DOCS / "notes.docx"), *missing],
                              "cafe", config, process=process_in_loop)
    assert summary["documents"] == 4 and summary["added"] == 4 and summary["passages"] > 4
    skipped = {entry["source"].rsplit("/", 1)[1]: entry["reason"] for entry in summary["skipped"]}
    assert set(skipped) == {"notes.docx", "gone.md", "gone.docx", "gone", "gone-uri", "broken.pdf", "empty.md",
                            "latin1.txt"}
    # A path that is not there is said so, whatever its name ends with (not "unsupported file type").
    assert {skipped[name] for name in ("gone.md", "gone.docx", "gone", "gone-uri")} == {"no such file or directory"}
    assert skipped["notes.docx"].startswith("unsupported file type")
    base = KnowledgeBase.open(config, "cafe")
    assert base.manifest["skipped"] == summary["skipped"]
    top = base.search("Is the muffin gluten free?", 2)
    assert "lemon poppy seed muffin is gluten free" in top[0].text
    assert top[0].score > top[1].score
    assert "Saturday and Sunday from 8 am to 4 pm" in base.search("opening hours on saturday", 1)[0].text
    assert base.search("zebra", 3) == []


def test_reindexing_reads_only_changed_documents(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    config = KnowledgeConfig(root=str(tmp_path / "bases"))
    index_documents([str(docs)], "cafe", config, process=process_in_loop)

    read = []

    def counting(sources, known, config, dense, workers):
        results = process_in_loop(sources, known, config, dense, workers)
        read.extend(r["source"].rsplit("/", 1)[1] for r in results if r["status"] != "unchanged")
        return results

    (docs / "hours.txt").write_text("Opening hours\n\nWe now open at 6 am every day, including holidays.\n")
    (docs / "policies.html").unlink()
    summary = index_documents([str(docs)], "cafe", config, process=counting)
    assert read == ["hours.txt"]
    assert (summary["unchanged"], summary["updated"], summary["removed"], summary["added"]) == (2, 1, 1, 0)
    base = KnowledgeBase.open(config, "cafe")
    assert "6 am every day" in base.search("what time do you open", 1)[0].text
    assert all("policies" not in p.chunk.source for p in base.search("loyalty card stamps refunds wifi", 10))
    summary = index_documents([str(docs)], "cafe", config, process=counting)
    assert summary["unchanged"] == 3 and read == ["hours.txt"]


def test_missing_and_empty_bases_are_clear_errors(tmp_path):
    config = KnowledgeConfig(root=str(tmp_path))
    with pytest.raises(KnowledgeError, match="'nothing' does not exist .*plexray knowledge index"):
        KnowledgeBase.open(config, "nothing")
    index_documents([str(BAD_DOCS)], "broken", config, process=process_in_loop)
    with pytest.raises(KnowledgeError, match="'broken' .* is empty: no passages .*skipped"):
        KnowledgeBase.open(config, "broken")


def test_dense_index_through_an_embeddings_endpoint(tmp_path):
    with EmbeddingsServer() as server:
        config = KnowledgeConfig(root=str(tmp_path), embeddings=EmbeddingsConfig(
            base_url=server.base_url, model="bag-of-words", backoff_s=0, batch_size=4))
        summary = index_documents([str(DOCS)], "cafe", config, dense_enabled=True, process=process_in_loop)
        assert summary["dense"] == {"model": "bag-of-words", "dim": 64}
        base = KnowledgeBase.open(config, "cafe")
        base.check_mode("dense")
        hit = base.search("muffin gluten free", 1, mode="dense")[0]
        assert "muffin is gluten free" in hit.text and 0 < hit.score <= 1
        # The lexical index of a dense base is kept in step as well.
        assert "muffin" in base.search("muffin", 1)[0].text
        with pytest.raises(KnowledgeError, match="holds vectors"):
            index_documents([str(DOCS)], "cafe", config, process=process_in_loop)
        other = KnowledgeBase.open(config.model_copy(update={"embeddings": EmbeddingsConfig(model="other")}), "cafe")
        with pytest.raises(KnowledgeError, match="embedded with 'bag-of-words'"):
            other.check_mode("dense")
    lexical_only = index_documents([str(DOCS)], "plain", config, process=process_in_loop)
    with pytest.raises(KnowledgeError, match="no vectors"):
        KnowledgeBase.open(config, lexical_only["name"]).check_mode("dense")


def test_show_lists_documents_passages_and_skipped_documents(tmp_path, capsys):
    from plexray.cli import main

    config = KnowledgeConfig(root=str(tmp_path))
    index_documents([str(DOCS / "menu.md"), str(BAD_DOCS / "empty.md")], "cafe", config, process=process_in_loop)
    base = KnowledgeBase.open(config, "cafe")
    assert main(["knowledge", "show", "cafe", "--set", f"knowledge.root={tmp_path}"]) == 0
    shown = capsys.readouterr().out
    menu = base.contents()["documents"][0]
    assert menu["title"] == "Harbor Lane Coffee menu" and len(menu["passages"]) == base.manifest["passages"] > 1
    assert f"{DOCS / 'menu.md'}\n  'Harbor Lane Coffee menu', markdown, {len(menu['passages'])} passages, " \
           f"sha256 {menu['hash'][:12]}" in shown
    for passage in menu["passages"]:  # each passage: its id, heading and the start of its text
        body = passage["text"].removeprefix(f"{passage['section']}: ")
        assert f"  {passage['id']}  [{passage['section']}] {body[:40]}" in shown
    assert f"skipped at the last index run: 1\n  {BAD_DOCS / 'empty.md'}: no text in it" in shown
    assert main(["knowledge", "show", "cafe", "--json", "--set", f"knowledge.root={tmp_path}"]) == 0
    assert json.loads(capsys.readouterr().out) == base.contents()
