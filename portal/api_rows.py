"""Fast output rows for model serializers: the same JSON as DRF's `Serializer.to_representation`, at a
fraction of its per-field cost.

`FastRowsMixin` (put it before `serializers.ModelSerializer`) turns the serializer's readable fields into a
plan once per serializer instance (a list serializer's child is one instance for every row of a page):
for each field, how to read its value from the instance and how to render it. Field types whose
`to_representation` is known and trivial (strings, integers, booleans, UUIDs, JSON, slug relations, lists of
strings, `get_FOO_display` labels, method fields, nested fast serializers) are rendered inline; any other
field goes through its own `get_attribute` and `to_representation`, as DRF does. The declared fields are
untouched, so the OpenAPI schema is the same.

A row whose reading raises (a missing related row, a method field that fails) is rendered again by DRF's own
path, so the outcome — a value, a skipped field or the error — is DRF's.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.db import models
from django.utils.hashable import make_hashable
from rest_framework import ISO_8601, relations, serializers
from rest_framework import fields as drf_fields
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject
from rest_framework.settings import api_settings

_Render = Callable[[Any], Any]
_Step = tuple[str, int, Any, Any]  # (field name, kind, reader, renderer)

# Step kinds: how a field's value is obtained.
_ATTR = 0  # getattr(instance, name); None stays None, else renderer(value)
_METHOD = 1  # a SerializerMethodField: its bound method, called with the instance
_FIELD = 2  # anything else: the field's own get_attribute and to_representation (DRF's path)
_MANY = 3  # a reverse or many-to-many manager: renderer(manager.all()) ([] while the instance is unsaved)
_LABEL = 4  # get_FOO_display: the choice's label from a table built once
_NESTED = 5  # a nested many=True fast serializer over a manager: renderer(manager.all())


def _identity(value: Any) -> Any:
    return value


def _render_bool(field: drf_fields.BooleanField) -> _Render:
    slow = field.to_representation
    return lambda value: value if value is True or value is False else slow(value)


def _str_list(value: Any) -> list[str | None]:
    return [str(item) if item is not None else None for item in value]


def _render_datetime(field: drf_fields.DateTimeField) -> _Render:
    """DRF's ISO 8601 output (the field's time zone, else the current one: read once, when the plan is made,
    i.e. within the request), "Z" for UTC; anything but an aware datetime goes through the field itself."""
    slow = field.to_representation
    output_format = getattr(field, "format", api_settings.DATETIME_FORMAT)
    zone = field.timezone if hasattr(field, "timezone") else field.default_timezone()
    if output_format is None or not isinstance(output_format, str) or output_format.lower() != ISO_8601 or zone is None:
        return slow

    def render(value: Any) -> Any:
        if type(value) is not datetime.datetime or value.utcoffset() is None:
            return slow(value)
        try:
            text = value.astimezone(zone).isoformat()
        except OverflowError:
            return slow(value)
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return render


def _render_choice(field: drf_fields.ChoiceField) -> _Render:
    slow = field.to_representation
    values = field.choice_strings_to_values
    return lambda value: values.get(value, value) if type(value) is str and value else slow(value)


def _simple_renderer(field: drf_fields.Field) -> _Render | None:
    """The inline renderer of a field type whose to_representation is known, or None."""
    kind = type(field)
    if kind is drf_fields.BigIntegerField:
        return field.to_representation if getattr(field, "coerce_to_string", api_settings.COERCE_BIGINT_TO_STRING) else int
    if kind is drf_fields.ChoiceField:
        return _render_choice(field)  # type: ignore[arg-type]
    if kind is drf_fields.CharField or kind is drf_fields.IPAddressField:
        return str
    if kind is drf_fields.IntegerField:
        return int
    if kind is drf_fields.BooleanField:
        return _render_bool(field)  # type: ignore[arg-type]
    if kind is drf_fields.UUIDField and field.uuid_format == "hex_verbose":  # type: ignore[attr-defined]
        return str
    if kind is drf_fields.ReadOnlyField or (kind is drf_fields.JSONField and not field.binary):  # type: ignore[attr-defined]
        return _identity
    if kind is drf_fields.DateTimeField:
        return _render_datetime(field)  # type: ignore[arg-type]
    if kind is relations.SlugRelatedField and "__" not in field.slug_field:  # type: ignore[attr-defined]
        slug = field.slug_field  # type: ignore[attr-defined]
        return lambda obj: getattr(obj, slug)
    if kind is drf_fields.ListField and type(field.child) is drf_fields.CharField:  # type: ignore[attr-defined]
        return _str_list
    return None


def _model_attr(model: type[models.Model], name: str) -> str | None:
    """What `getattr(instance, name)` is on the model: "value" (a field's value, a related row, a manager),
    "display" (get_FOO_display of a choices field) or None (anything else: a property, a method)."""
    try:
        model._meta.get_field(name)
        return "value"
    except FieldDoesNotExist:
        pass
    if name.startswith("get_") and name.endswith("_display"):
        try:
            field = model._meta.get_field(name[4:-8])
        except FieldDoesNotExist:
            return None
        if getattr(field, "choices", None) and getattr(model, name, None) is not None:
            return "display"
    return None


def _plan_step(serializer: Any, model: type[models.Model], field: drf_fields.Field) -> _Step:
    name = field.field_name
    assert name is not None
    if isinstance(field, drf_fields.SerializerMethodField):
        return name, _METHOD, getattr(serializer, field.method_name), None
    source_attrs = field.source_attrs
    if len(source_attrs) != 1:
        return name, _FIELD, field, None
    attr = source_attrs[0]
    what = _model_attr(model, attr)
    if what == "display" and type(field) is drf_fields.CharField:
        model_field: Any = model._meta.get_field(attr[4:-8])
        labels = {make_hashable(key): str(label) for key, label in model_field.flatchoices}
        return name, _LABEL, (model_field.attname, labels), None
    if what != "value":
        return name, _FIELD, field, None
    if isinstance(field, relations.ManyRelatedField):
        child = _simple_renderer(field.child_relation)
        if child is None:
            return name, _FIELD, field, None
        return name, _MANY, attr, lambda rows: [child(row) for row in rows]
    if type(field) is serializers.ListSerializer and isinstance(field.child, FastRowsMixin):
        row = field.child.to_representation
        return name, _NESTED, attr, lambda rows: [row(item) for item in rows]
    render = _simple_renderer(field)
    if render is None:
        return name, _FIELD, field, None
    return name, _ATTR, attr, render


class FastRowsMixin:
    # `to_representation` from a plan of the readable fields: see the module's docstring. (No docstring
    # here: drf-spectacular would describe every serializer without one of its own by it.)

    def _row_plan(self) -> list[_Step]:
        plan = self.__dict__.get("_fast_row_plan")
        if plan is None:
            model = self.Meta.model  # type: ignore[attr-defined]
            plan = [_plan_step(self, model, field) for field in self._readable_fields]  # type: ignore[attr-defined]
            self.__dict__["_fast_row_plan"] = plan
        return plan

    def to_representation(self, instance: Any) -> dict[str, Any]:
        try:
            return self._fast_row(instance)
        except (AttributeError, KeyError, ObjectDoesNotExist, SkipField):
            return super().to_representation(instance)  # type: ignore[misc]

    def _fast_row(self, instance: Any) -> dict[str, Any]:
        ret: dict[str, Any] = {}
        for name, kind, reader, render in self._row_plan():
            if kind == _ATTR:
                value = getattr(instance, reader)
                ret[name] = None if value is None else render(value)
            elif kind == _METHOD:
                ret[name] = reader(instance)
            elif kind == _LABEL:
                attname, labels = reader
                value = getattr(instance, attname)
                label = labels.get(make_hashable(value), value)
                ret[name] = None if label is None else str(label)
            elif kind == _MANY:
                ret[name] = [] if instance.pk is None else render(getattr(instance, reader).all())
            elif kind == _NESTED:
                value = getattr(instance, reader)
                if value is None:
                    ret[name] = None
                else:
                    ret[name] = render(value.all() if isinstance(value, models.manager.BaseManager) else value)
            else:
                value = reader.get_attribute(instance)
                check = value.pk if isinstance(value, PKOnlyObject) else value
                ret[name] = None if check is None else reader.to_representation(value)
        return ret
