"""tally: the RLNVR recipe over a file of your own prior items (JSON lines or CSV).

A third application of the engine (varro.engine.core.app): items grouped by a key
(a URL, a topic), each with an author, a text, a created time and engagement
counts. The items that beat their author's usual teach the model to write for
a group; see tally.task for the prompts, tally.reward for the reward and
docs/write-your-own-app.md for how it was built.
"""
