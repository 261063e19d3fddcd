"""REST doors of consoles (included under /api/ from portal/api_urls.py)."""
