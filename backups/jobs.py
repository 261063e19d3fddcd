"""Act phases of the backup jobs (backup.create, backup.restore, backup.delete).

STUB (issue #11): implemented by the backups work.
"""
