"""Knowledge bases: documents -> chunks -> a retrieval index, and passages joined to a persona's prompt.

documents.py  read Markdown, text, HTML and PDF files into plain text (unreadable ones: skipped, with why)
headings.py   the headings of PDFs and plain text (by size, weight, place), written as Markdown headings
chunking.py   split a document into passages of a bounded size, each under its section heading
lexical.py    the SQLite FTS5 index (BM25 ranking, standard library, no model)
embeddings.py an OpenAI-compatible embeddings client (dense retrieval is optional)
dense.py      the vectors in a LanceDB table
storage.py    where a knowledge base lives (local path or pyarrow/fsspec URI) and its manifest
indexer.py    `plexray knowledge index`: incremental by document hash, read and chunked with Ray Data
retrieval.py  a knowledge base opened for searching
prompt.py     the one layout of "system prompt + passages" that serving and training data share
facts.py      whether a dialogue uses a retrieved fact (data validation)
words.py      English function words (left out of queries and of a fact's content)
"""
