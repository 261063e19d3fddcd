"""Web forms for the image library: they only parse what the browser sent; every rule lives in
storage.services (the same messages on the web, the API and Slack)."""

from __future__ import annotations

from django import forms
from django.contrib.auth.models import Group

from .models import Image


class ImageUpdateForm(forms.Form):
    """What the owner or an administrator may change on an image's page."""

    title = forms.CharField(required=False, max_length=100)
    description = forms.CharField(required=False, widget=forms.Textarea, max_length=4000)
    visibility = forms.ChoiceField(choices=Image.Visibility.choices)
    groups = forms.ModelMultipleChoiceField(queryset=Group.objects.none(), required=False,
                                            widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args, groups=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["groups"].queryset = groups if groups is not None else Group.objects.none()
