"""Web form for adding an SSH key (shape only: the rules are in accounts.validation and services)."""

from __future__ import annotations

from django import forms

from .validation import NAME_MAX


class SSHKeyForm(forms.Form):
    name = forms.CharField(label="Name", required=False, max_length=NAME_MAX,
                           help_text="Optional: the key's comment is used when left blank.")
    # No max_length here: accounts.validation says "too long" in the same words for every door.
    public_key = forms.CharField(label="Public key", strip=False, widget=forms.Textarea(attrs={"rows": 4}),
                                 help_text="One line from your .pub file, e.g. ~/.ssh/id_ed25519.pub.")
