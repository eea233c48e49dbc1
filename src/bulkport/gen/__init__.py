"""``bulkport gen``: users CSV, articles NDJSON and comments NDJSON with known flaws.

The files are deterministic for a given ``--seed`` and come with the exact
outcome bulkport must produce when they are imported in insert mode, in the
order users -> articles -> comments, into a database that holds none of their
records (with the default allowed roles): records, successful, rejected and the
count of every error code. That outcome is written next to the files as
``expected.json`` and printed.

How the expectation stays exact
-------------------------------
Every row is either clean or carries exactly one *flaw kind* from
:data:`FLAWS`; each kind yields a fixed set of error codes whatever the batch
boundaries are, because the generator only builds situations whose outcome the
import semantics settle alone:

* field problems are all reported together (``email_and_role`` yields two codes);
* a duplicate (``duplicate_email``, ``duplicate_slug``, ``duplicate_id``) copies
  the key of an *earlier record that is accepted*, and is itself free of any
  other problem, so it is rejected with exactly one code;
* a record may reuse the key of an earlier record that *field validation*
  rejects (``email_of_rejected``, ``slug_of_rejected``): that earlier record is
  no twin, so the later one is accepted;
* references of clean records point at records that are accepted; broken
  references point at ids that never reach the database (``a-missing-N``,
  non-UUID text, ids of rejected records) and appear only on records with no
  other problem. A record rejected only by the database is never used as a twin
  or as a reference target: whether it shadows a later record depends on batch
  boundaries.

Which rows carry which flaw is a seeded shuffle of exact counts
(``round(share * rows)`` per kind); a duplicate that finds no earlier record to
copy (the first rows of a file) is written clean, and the expectation counts
what was written.

Memory: one byte per generated user and article (the flaw plan, needed to pick
references at random), plus the keys of the ``--users-file`` when one is used.
Ids, emails and slugs are pure functions of (seed, row), so nothing else is kept.

The modules: :mod:`~bulkport.gen.flaws` (the flaw catalogue and mixes),
:mod:`~bulkport.gen.values` (value makers), :mod:`~bulkport.gen.refs`
(reference targets), :mod:`~bulkport.gen.generator` (the plan and twins shared
by :mod:`~bulkport.gen.users`, :mod:`~bulkport.gen.articles` and
:mod:`~bulkport.gen.comments`), :mod:`~bulkport.gen.expected` (expected counts),
:mod:`~bulkport.gen.run` (one run) and :mod:`~bulkport.gen.command` (the CLI).
"""

from __future__ import annotations

from bulkport.gen.command import add_arguments, config_from_args, main
from bulkport.gen.flaws import DEFAULT_MIX, FLAWS, Flaw, Mix, Stage, build_mix
from bulkport.gen.run import FILE_NAMES, GenConfig, generate

__all__ = ["DEFAULT_MIX", "FILE_NAMES", "FLAWS", "Flaw", "GenConfig", "Mix", "Stage",
           "add_arguments", "build_mix", "config_from_args", "generate", "main"]
