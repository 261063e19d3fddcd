"""Web forms for quota requests (shape only: the rules are in quotas.services)."""

from __future__ import annotations

from django import forms

from .selectors import REASON_MAX


class QuotaRequestForm(forms.Form):
    max_vms = forms.IntegerField(label="VMs", required=False, min_value=0)
    max_vcpus = forms.IntegerField(label="vCPUs", required=False, min_value=0)
    max_memory_mib = forms.IntegerField(label="Memory (MiB)", required=False, min_value=0)
    max_disk_gib = forms.IntegerField(label="Disk (GiB)", required=False, min_value=0)
    max_backup_gib = forms.IntegerField(label="Backup space (GiB)", required=False, min_value=0)  # issue #11
    reason = forms.CharField(label="Why do you need it?", required=False, max_length=REASON_MAX,
                             widget=forms.Textarea(attrs={"rows": 3}))


class DecisionForm(forms.Form):
    note = forms.CharField(label="Note to the requester", required=False, max_length=REASON_MAX)
