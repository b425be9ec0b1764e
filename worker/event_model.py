"""The event contract of ``schemas/`` as msgspec types: a fast check that only ever accepts.

``schemas/`` stays the published contract and the authority. These types say the same thing
(the same required fields, types, lengths, enums and, for formats and patterns, the very
regular expressions the compiled JSON Schemas use), and where msgspec cannot say a rule or says
it more strictly (``integer`` 1.0, ``not`` both Braze ids) the check answers "not sure" and
the decoder runs the JSON Schemas as before. So a record the check passes is one the JSON
Schemas accept, and every rejection keeps the JSON Schemas' reason and message. It costs about
five microseconds per event where the compiled JSON Schemas cost about sixteen
(``tests/unit/test_event_model.py`` proves the agreement on every example and on generated
events). The decoder asks it only about values up to 64 KiB: its decoded copy of a larger one
would double the memory that value takes while it is decoded.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from fastjsonschema.draft04 import DOLLAR_FINDER
from fastjsonschema.draft07 import CodeGeneratorDraft07
from msgspec import UNSET, Meta, Struct, UnsetType

_FORMATS: Final = CodeGeneratorDraft07.FORMAT_REGEXS


def _pattern(pattern: str) -> str:
    """A schema ``pattern`` as fastjsonschema compiles it: each ``$`` becomes ``\\Z``, so
    ``"FR\\n"`` does not match ``^[A-Z]{2}$``."""
    return DOLLAR_FINDER.sub(r"\\Z", pattern)


DateTime = Annotated[str, Meta(pattern=_FORMATS["date-time"])]
Email = Annotated[str, Meta(pattern=_FORMATS["email"])]
NonEmpty = Annotated[str, Meta(min_length=1)]
# definitions/id of envelope.v1.json: one URL path segment once percent-encoded
_ID_PATTERN: Final = _pattern(r"^(?!\.{1,2}$)[^\u0000-\u001f\u007f-\u009f]+$")
Id = Annotated[str, Meta(min_length=1, max_length=255, pattern=_ID_PATTERN)]
DestinationName = Annotated[str, Meta(pattern=_pattern("^[a-z][a-z0-9_]*$"))]


class _Data(Struct, forbid_unknown_fields=False):
    """Unknown extra fields are allowed (and ignored), as in the schemas."""


class RewardsIssued(_Data):
    reward_type: NonEmpty
    issued_date: DateTime
    issued_location_name: str | UnsetType = UNSET
    reward_id: str | UnsetType = UNSET
    points: float | UnsetType = UNSET


class MemberEnrolled(_Data):
    email: Email | UnsetType = UNSET
    first_name: str | UnsetType = UNSET
    last_name: str | UnsetType = UNSET
    country: Annotated[str, Meta(pattern=_pattern("^[A-Z]{2}$"))] | UnsetType = UNSET
    home_city: str | UnsetType = UNSET
    time_zone: (
        Annotated[str, Meta(pattern=_pattern("^[A-Za-z_]+(/[A-Za-z0-9_+-]+){0,2}$"))] | UnsetType
    ) = UNSET
    points_available: float | UnsetType = UNSET
    email_contact_allowed: bool | UnsetType = UNSET
    sms_contact_allowed: bool | UnsetType = UNSET
    email_subscribe: Literal["opted_in", "subscribed", "unsubscribed"] | UnsetType = UNSET
    date_joined: DateTime | UnsetType = UNSET


class Campaign(_Data):
    id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    runtime: str | UnsetType = UNSET
    custom_data: dict[str, Any] | UnsetType = UNSET


class OfferIssued(_Data):
    offer_id: NonEmpty
    user_offer_id: str | UnsetType = UNSET
    offer_title: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    terms_and_conditions: str | UnsetType = UNSET
    logo_url: str | UnsetType = UNSET
    pos_discount_id: str | UnsetType = UNSET
    expires_at: DateTime | UnsetType = UNSET
    points_award_amount: float | UnsetType = UNSET
    point_account_name: str | UnsetType = UNSET
    braze_campaign_id: NonEmpty | UnsetType = UNSET
    braze_canvas_id: NonEmpty | UnsetType = UNSET
    broadcast: bool | UnsetType = UNSET
    enrollment: MemberEnrolled | UnsetType = UNSET  # the same fields as member_enrolled data
    campaign: Campaign | UnsetType = UNSET


class AudienceMembershipChanged(_Data):
    audience: Id
    action: Literal["add", "remove"]
    ttl_seconds: Annotated[int, Meta(ge=1)] | UnsetType = UNSET


class _Envelope(Struct, forbid_unknown_fields=False, tag_field="event_type", kw_only=True):
    event_id: Annotated[str, Meta(min_length=1, max_length=200)]
    schema_version: Literal[1]
    occurred_at: DateTime
    member_id: Id
    source: str | UnsetType = UNSET
    identifiers: dict[DestinationName, Id] | UnsetType = UNSET


class RewardsIssuedEvent(_Envelope, tag="rewards_issued"):
    data: RewardsIssued


class OfferIssuedEvent(_Envelope, tag="offer_issued"):
    data: OfferIssued


class MemberEnrolledEvent(_Envelope, tag="member_enrolled"):
    data: MemberEnrolled


class AudienceMembershipChangedEvent(_Envelope, tag="audience_membership_changed"):
    data: AudienceMembershipChanged


Event = RewardsIssuedEvent | OfferIssuedEvent | MemberEnrolledEvent | AudienceMembershipChangedEvent


_DECODER: Final = msgspec.json.Decoder(Event)


def surely_valid(value: bytes) -> bool:
    """True only when the JSON Schemas accept the JSON ``value``; False means "run them".

    msgspec validates every occurrence of a repeated key, so the object orjson builds (the
    last occurrence wins) is one these types accepted.
    """
    try:
        event = _DECODER.decode(value)
    except msgspec.DecodeError:  # a ValidationError, or JSON msgspec reads otherwise
        return False
    data = event.data
    # the schema's `not`: at most one of the two Braze ids
    return not (
        isinstance(data, OfferIssued)
        and data.braze_campaign_id is not UNSET
        and data.braze_canvas_id is not UNSET
    )
