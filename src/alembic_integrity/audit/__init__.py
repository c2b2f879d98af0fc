"""What breaks the declared rules now (audit), which rows (violations), and the pre-flight verdict.
Imports ``rules`` and ``pg``; the pre-flight also runs its sibling ``repair``.
"""
