"""The registration answer: one type, written by the control plane and read by the agent."""

import pytest

from agent.schema.errors import ValidationError
from agent.schema.registration import Registration


def test_the_answer_round_trips():
    reg = Registration("inst-1", "cred-secret", "stack-1")
    assert Registration.from_json(reg.to_json()) == reg
    assert reg.to_json() == {
        "instance_id": "inst-1",
        "credential": "cred-secret",
        "stack_id": "stack-1",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "registration"),
        ({"instance_id": "i", "stack_id": "s"}, "credential"),
        ({"instance_id": 7, "credential": "c", "stack_id": "s"}, "instance_id"),
        ({"instance_id": "i", "credential": "c", "stack_id": ""}, "stack_id"),
    ],
)
def test_a_bad_answer_names_the_field(body, field):
    with pytest.raises(ValidationError) as exc:
        Registration.from_json(body)
    assert exc.value.field == field
