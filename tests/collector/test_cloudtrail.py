"""Amazon ECR's CloudTrail records and EventBridge events, in the shapes AWS documents them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from recommender.collector.cloudtrail import parse_cloudtrail
from recommender.errors import PayloadError
from recommender.usage import Classifier

ACCOUNT = "123456789012"
REGION = "eu-west-1"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
A = "sha256:" + "a1" * 32
B = "sha256:" + "b2" * 32
NODE_ROLE = f"arn:aws:sts::{ACCOUNT}:assumed-role/eks-nodes/i-0a1b2c3d4e5f67890"
TAGWARDEN_ROLE = f"arn:aws:sts::{ACCOUNT}:assumed-role/tagwarden/botocore-session-1709280000"
INDEX = "application/vnd.oci.image.index.v1+json"


def identity(arn: str) -> dict[str, Any]:
    role = arn.split("/")[1]
    return {
        "type": "AssumedRole", "principalId": f"AROAEXAMPLE{role.upper()}:session",
        "arn": arn, "accountId": ACCOUNT, "accessKeyId": "ASIAEXAMPLEKEY0000001",
        "sessionContext": {
            "sessionIssuer": {"type": "Role", "principalId": f"AROAEXAMPLE{role.upper()}",
                              "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
                              "accountId": ACCOUNT, "userName": role},
            "webIdFederationData": {},
            "attributes": {"creationDate": "2026-03-01T09:12:44Z", "mfaAuthenticated": "false"},
            "ec2RoleDelivery": "2.0",
        },
    }


def record(name: str, event_id: str, time: str, params: Any, *, response: Any = None,
           arn: str = NODE_ROLE, agent: str = "containerd/v1.7.11",
           addr: str = "10.0.12.34", **extra: Any) -> dict[str, Any]:
    """A CloudTrail record of ECR as a trail writes it."""
    return {
        "eventVersion": "1.08", "userIdentity": identity(arn), "eventTime": time,
        "eventSource": "ecr.amazonaws.com", "eventName": name, "awsRegion": REGION,
        "sourceIPAddress": addr, "userAgent": agent, "requestParameters": params,
        "responseElements": response, "requestID": f"req-{event_id}", "eventID": event_id,
        "readOnly": name == "BatchGetImage",
        "resources": [{"accountId": ACCOUNT,
                       "ARN": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team/app"}],
        "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                       "clientProvidedHostHeader": REGISTRY},
        **extra,
    }


def pull(event_id: str, time: str, *, tag: str | None = "v1", digest: str | None = None,
         repo: str = "team/app", **kw: Any) -> dict[str, Any]:
    image_id = {k: v for k, v in (("imageTag", tag), ("imageDigest", digest)) if v}
    return record("BatchGetImage", event_id, time, {
        "imageIds": [image_id],
        "acceptedMediaTypes": ["application/vnd.docker.distribution.manifest.v2+json",
                               "application/vnd.docker.distribution.manifest.list.v2+json",
                               "application/vnd.oci.image.manifest.v1+json", INDEX],
        "repositoryName": repo, "registryId": ACCOUNT}, **kw)


def put(event_id: str, time: str, *, tag: str | None, digest: str,
        repo: str = "team/app", media_type: str = INDEX) -> dict[str, Any]:
    image_id = {"imageDigest": digest, **({"imageTag": tag} if tag else {})}
    params = {"repositoryName": repo, "registryId": ACCOUNT, "imageManifest": "{...}",
              "imageManifestMediaType": media_type, **({"imageTag": tag} if tag else {})}
    return record("PutImage", event_id, time, params, agent="docker/27.3.1 go/go1.22.7 "
                  "git-commit/41ca978 kernel/6.8.0 os/linux arch/amd64 "
                  "UpstreamClient(Docker-Client/27.3.1 \\(linux\\))",
                  arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-push/gha-4711",
                  response={"image": {"registryId": ACCOUNT, "repositoryName": repo,
                                      "imageId": image_id, "imageManifest": "{...}",
                                      "imageManifestMediaType": media_type}})


# A node pulling team/app:v1 (the tag only, as containerd resolves it).
PULL_BY_TAG = pull("5c7a8a4e-2f4b-4e2b-9a8d-0f6d1b2c3d4e", "2026-03-01T10:00:00Z")
# A lifecycle policy expiring two images (AWS's sample: userIdentity of AWS itself).
POLICY_EXPIRY = {
    "eventVersion": "1.05",
    "userIdentity": {"accountId": ACCOUNT, "invokedBy": "AWS Internal"},
    "eventTime": "2026-03-02T20:22:12Z", "eventSource": "ecr.amazonaws.com",
    "eventName": "PolicyExecutionEvent", "awsRegion": REGION,
    "sourceIPAddress": "AWS Internal", "userAgent": "AWS Internal",
    "requestParameters": None, "responseElements": None,
    "eventID": "9354dd7f-9aac-4e9d-956d-12561a4923aa", "readOnly": True,
    "resources": [{"ARN": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team/app",
                   "accountId": ACCOUNT, "type": "AWS::ECR::Repository"}],
    "eventType": "AwsServiceEvent", "recipientAccountId": ACCOUNT,
    "serviceEventDetails": {
        "repositoryName": "team/app",
        "lifecycleEventPolicy": {
            "lifecycleEventRules": [
                {"rulePriority": 1, "description": "keep 2 images",
                 "lifecycleEventSelection": {"tagStatus": "Any", "tagPrefixList": [],
                                             "countType": "Image count more than",
                                             "countNumber": 2},
                 "action": "expire"},
                {"rulePriority": 2, "description": "archive old",
                 "lifecycleEventSelection": {"tagStatus": "Any",
                                             "countType": "Since image pushed",
                                             "countNumber": 90},
                 "action": "transition"}],
            "lastEvaluatedAt": 0, "policyVersion": 1,
            "policyId": "ceb86829-58e7-9498-920c-aa042e33037b"},
        "lifecycleEventImageActions": [
            {"lifecycleEventImage": {"digest": A, "tagStatus": "Tagged", "tagList": ["v1"],
                                     "pushedAt": 1772300000000}, "rulePriority": 1},
            {"lifecycleEventImage": {"digest": B, "tagStatus": "Untagged",
                                     "pushedAt": 1772300000000}, "rulePriority": 2},
        ],
    },
}
# ECR's own EventBridge event for a completed push.
IMAGE_PUSHED = {
    "version": "0", "id": "13cde686-328b-6117-af20-0e5566167482",
    "detail-type": "ECR Image Action", "source": "aws.ecr", "account": ACCOUNT,
    "time": "2026-03-01T09:54:34Z", "region": REGION, "resources": [],
    "detail": {"result": "SUCCESS", "repository-name": "team/app", "image-digest": A,
               "action-type": "PUSH", "image-tag": "v1"},
}


def via_eventbridge(rec: dict[str, Any], kind: str = "AWS API Call via CloudTrail"
                    ) -> dict[str, Any]:
    """A CloudTrail record as an EventBridge rule delivers it (an API destination's body)."""
    return {"version": "0", "id": "6f87d04b-9f74-4f04-a780-7acf4b0a9b38", "detail-type": kind,
            "source": "aws.ecr", "account": ACCOUNT, "time": rec["eventTime"],
            "region": REGION, "resources": [], "detail": rec}


def parse(doc: Any, classifier: Classifier | None = None) -> list[Any]:
    return parse_cloudtrail(doc, classifier or Classifier())


# --- pulls ------------------------------------------------------------------------------------


def test_a_pull_by_tag_names_the_tag_and_leaves_the_digest_to_the_history() -> None:
    [ev] = parse(PULL_BY_TAG)
    assert ev.time == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert (ev.source, ev.action, ev.usage) == ("cloudtrail", "pull", "use")
    assert (ev.repository, ev.digest, ev.tag) == ("team/app", None, "v1")
    assert ev.registry == REGISTRY
    assert ev.source_event_id == "5c7a8a4e-2f4b-4e2b-9a8d-0f6d1b2c3d4e#0"
    assert (ev.actor, ev.user_agent, ev.client_addr) == (NODE_ROLE, "containerd/v1.7.11",
                                                         "10.0.12.34")


def test_a_pull_by_digest_and_one_call_for_several_images() -> None:
    doc = pull("e-2", "2026-03-01T10:00:00Z", tag=None, digest=A)
    doc["requestParameters"]["imageIds"].append({"imageTag": "v2"})
    first, second = parse(doc)
    assert (first.digest, first.tag, second.digest, second.tag) == (A, None, None, "v2")
    assert [first.source_event_id, second.source_event_id] == ["e-2#0", "e-2#1"]


def test_a_recorded_response_gives_the_digest() -> None:
    doc = pull("e-3", "2026-03-01T10:00:00Z", response={
        "images": [{"registryId": ACCOUNT, "repositoryName": "team/app",
                    "imageId": {"imageDigest": B, "imageTag": "v1"}}], "failures": []})
    [ev] = parse(doc)
    assert (ev.digest, ev.tag) == (B, "v1")


def test_failed_calls_are_no_use() -> None:
    denied = pull("e-4", "2026-03-01T10:00:00Z", errorCode="AccessDenied",
                  errorMessage="User is not authorized to perform: ecr:BatchGetImage")
    missing = pull("e-5", "2026-03-01T10:00:00Z", tag="gone", response={
        "images": [], "failures": [{"imageId": {"imageTag": "gone"},
                                    "failureCode": "ImageNotFound",
                                    "failureReason": "Requested image not found"}]})
    assert [e.usage for e in parse([denied, missing])] == ["failed", "failed"]


@pytest.mark.parametrize(("arn", "agent", "usage"), [
    (f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSServiceRoleForAmazonInspector2/inspector",
     "inspector2.amazonaws.com", "scanner"),
    (f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSServiceRoleForECRReplication/ecr",
     "ecr.amazonaws.com", "replication"),
    (f"arn:aws:sts::{ACCOUNT}:assumed-role/ci/build-1", "trivy/0.58.1", "scanner"),
    (TAGWARDEN_ROLE, "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux", "self"),
    (NODE_ROLE, "AWS Internal", "use"),  # unknown: the safe side
])
def test_classified_by_role_and_user_agent(arn: str, agent: str, usage: str) -> None:
    classifier = Classifier(self_actors=[r":assumed-role/tagwarden/"])
    [ev] = parse(pull("e-6", "2026-03-01T10:00:00Z", arn=arn, agent=agent), classifier)
    assert ev.usage == usage


def test_an_aws_service_is_no_client_address() -> None:
    doc = pull("e-7", "2026-03-01T10:00:00Z", addr="ecs-tasks.amazonaws.com")
    doc["userIdentity"] = {"type": "AWSService", "invokedBy": "ecs-tasks.amazonaws.com"}
    [ev] = parse(doc)
    assert (ev.client_addr, ev.actor, ev.usage) == (None, "ecs-tasks.amazonaws.com", "use")
    [v6] = parse(pull("e-8", "2026-03-01T10:00:00Z", addr="2001:db8::17"))
    assert v6.client_addr == "2001:db8::17"


def test_calls_without_usage_are_skipped() -> None:
    layer = record("GetDownloadUrlForLayer", "e-9", "2026-03-01T10:00:01Z",
                   {"repositoryName": "team/app", "registryId": ACCOUNT,
                    "layerDigest": "sha256:" + "c" * 64})
    token = record("GetAuthorizationToken", "e-10", "2026-03-01T10:00:00Z", None)
    assert parse([layer, token]) == []


# --- pushes and deletes -----------------------------------------------------------------------


def test_put_image_is_a_push_of_tag_and_digest() -> None:
    [ev] = parse(put("e-11", "2026-03-01T09:54:33Z", tag="v1", digest=A))
    assert (ev.action, ev.repository, ev.digest, ev.tag, ev.media_type) == (
        "push", "team/app", A, "v1", INDEX)
    untagged = put("e-12", "2026-03-01T09:54:32Z", tag=None, digest=B)  # an index's child
    assert [(e.action, e.digest, e.tag) for e in parse(untagged)] == [("push", B, None)]
    failed = put("e-13", "2026-03-01T09:54:33Z", tag="v1", digest=A)
    failed.update(errorCode="ImageTagAlreadyExistsException", responseElements=None)
    assert parse(failed) == []


def test_batch_delete_by_digest_deletes_the_image_by_tag_only_the_tag() -> None:
    doc = record("BatchDeleteImage", "e-14", "2026-03-03T08:00:00Z", {
        "repositoryName": "team/app", "registryId": ACCOUNT,
        "imageIds": [{"imageDigest": A}, {"imageTag": "v2"}, {"imageDigest": B}]},
        response={"imageIds": [{"imageDigest": A, "imageTag": "v1"},
                               {"imageDigest": B, "imageTag": "v2"}],
                  "failures": [{"imageId": {"imageDigest": B}, "failureCode": "ImageNotFound",
                                "failureReason": "Requested image not found"}]})
    assert [(e.action, e.digest, e.tag) for e in parse(doc)] == [
        ("delete", A, None), ("delete", None, "v2")]


def test_lifecycle_policy_expiry_deletes_the_expired_not_the_archived() -> None:
    [ev] = parse(POLICY_EXPIRY)
    assert (ev.action, ev.repository, ev.digest, ev.tag, ev.usage) == (
        "delete", "team/app", A, None, "janitor")
    assert ev.source_event_id == "9354dd7f-9aac-4e9d-956d-12561a4923aa#0"
    assert ev.client_addr is None and ev.registry == REGISTRY


def test_ecr_image_actions_keep_the_tag_history() -> None:
    [push] = parse(IMAGE_PUSHED)
    assert (push.action, push.digest, push.tag, push.registry) == ("push", A, "v1", REGISTRY)
    assert push.time == datetime(2026, 3, 1, 9, 54, 34, tzinfo=UTC)
    untag = copy.deepcopy(IMAGE_PUSHED)
    untag["detail"]["action-type"] = "DELETE"
    by_digest = copy.deepcopy(untag)
    del by_digest["detail"]["image-tag"]
    failed = copy.deepcopy(IMAGE_PUSHED)
    failed["detail"]["result"] = "FAILURE"
    assert [(e.action, e.digest, e.tag) for e in parse([untag, by_digest, failed])] == [
        ("delete", None, "v1"), ("delete", A, None)]


def test_other_ecr_events_carry_no_usage() -> None:
    scan = {**IMAGE_PUSHED, "detail-type": "ECR Image Scan",
            "detail": {"scan-status": "COMPLETE", "repository-name": "team/app"}}
    assert parse(scan) == []


# --- documents --------------------------------------------------------------------------------


def test_a_trail_file_keeps_ecr_s_records_and_skips_other_services() -> None:
    s3 = {"eventVersion": "1.09", "eventSource": "s3.amazonaws.com", "eventName": "GetObject",
          "eventTime": "2026-03-01T10:00:00Z", "eventID": "s3-1"}
    trail = {"Records": [s3, PULL_BY_TAG, POLICY_EXPIRY]}
    assert [e.action for e in parse(trail)] == ["pull", "delete"]


def test_eventbridge_delivery_is_the_same_event_as_the_trail_s() -> None:
    assert parse(via_eventbridge(PULL_BY_TAG)) == parse(PULL_BY_TAG)
    assert parse(via_eventbridge(POLICY_EXPIRY, "AWS Service Event via CloudTrail")) == \
        parse(POLICY_EXPIRY)


@pytest.mark.parametrize(("doc", "where", "words"), [
    ({**PULL_BY_TAG, "eventSource": "s3.amazonaws.com"}, "eventSource", "is not ECR"),
    ({**via_eventbridge(PULL_BY_TAG), "source": "aws.s3"}, "source", "not ECR's"),
    (via_eventbridge({**PULL_BY_TAG, "eventSource": "ec2.amazonaws.com"}),
     "detail.eventSource", "is not ECR"),
    ({**PULL_BY_TAG, "requestParameters": {"imageIds": [{"imageTag": "v1"}]}},
     "requestParameters.repositoryName", "required"),
    ({**PULL_BY_TAG, "requestParameters": {"repositoryName": "team/app", "imageIds": [{}]}},
     "requestParameters.imageIds[0].imageDigest", "or imageTag is required"),
    ({**PULL_BY_TAG, "requestParameters": {"repositoryName": "team/app",
                                           "imageIds": [{"imageDigest": "latest"}]}},
     "requestParameters.imageIds[0].imageDigest", "not a sha256 digest"),
    ({k: v for k, v in PULL_BY_TAG.items() if k != "eventID"}, "eventID", "required"),
    ({**PULL_BY_TAG, "eventTime": "yesterday"}, "eventTime", ""),
    ({"Records": [PULL_BY_TAG, {**PULL_BY_TAG, "eventTime": None}]},
     "Records[1].eventTime", "required"),
    ({"detail": {}}, None, "neither a CloudTrail record"),
    ([], None, "no CloudTrail records"),
])
def test_bad_input_names_the_field(doc: Any, where: str | None, words: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse(doc)
    assert caught.value.as_dict().get("where") == where
    assert words in caught.value.message


def test_a_time_after_latest_is_refused() -> None:
    with pytest.raises(PayloadError, match="eventTime"):
        parse_cloudtrail(PULL_BY_TAG, Classifier(),
                         latest=datetime(2026, 2, 1, tzinfo=UTC))


@pytest.mark.parametrize("stamp", [
    "2026-03-01T10:00:00Z", "2026-03-01 10:00:00Z", "2026-03-01t10:00:00Z",
    "2026-02-30T10:00:00Z", "2026-03-01T10:00:60Z", "1999-03-01T10:00:00Z",
    "2026-03-01T10:00:00.5Z", "2026-03-01T12:00:00+02:00", "2027-03-01T10:00:00Z",
])
def test_cloudtrail_s_time_form_reads_as_the_general_parser_does(stamp: str) -> None:
    from recommender.collector.payload import get_time

    latest = datetime(2026, 12, 1, tzinfo=UTC)

    def outcome(read: Any) -> Any:
        try:
            return read()
        except PayloadError as exc:
            return exc.as_dict()

    doc = {**PULL_BY_TAG, "eventTime": stamp}
    got = outcome(lambda: parse_cloudtrail(doc, Classifier(), latest=latest)[0].time)
    assert got == outcome(lambda: get_time(doc, "eventTime", "", latest))
