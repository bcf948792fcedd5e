"""English function words: the words of a text that say nothing about its topic.

Dropped from retrieval queries (they match most passages, so they cost the search time and add
nothing to BM25's ranking) and not counted as the content of a fact.
"""

FUNCTION_WORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being below between both but by
can could did do does doing down during each few for from further had has have having he her here hers him his how
into is it its itself just let me more most my no nor not now of off on once only or other our ours out over own
same she should so some such than that the their theirs them then there these they this those through to too under
until up very was we were what when where which while who whom why will with would you your yours yes okay sure
""".split())
