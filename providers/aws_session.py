"""AWS access shared by the aws_ec2 and aws_rds providers.

Options common to both (regions, credentials, endpoint, retries), one botocore session per
region (with the role assumed through that region's STS when asked), concurrent per-region
discovery, and the translation of boto3/botocore errors into the project's error types.

boto3 is imported only when a provider is used: nothing at module level touches it.
Credentials come only from the standard chain (environment, profile, IRSA web identity,
EKS Pod Identity) and are never logged or put in an error message.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from syncer.plugin import (
    PermanentSourceError,
    ProviderOptions,
    SourceContext,
    SourceError,
    TransientSourceError,
    import_optional,
    redact_remote_message,
    split_http_url,
)

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from botocore.session import Session as BotocoreSession
    from mypy_boto3_sts.client import STSClient
    from mypy_boto3_sts.type_defs import CredentialsTypeDef

T = TypeVar("T")

# Stricter than botocore's own check: a region is lower-case words joined by dashes and
# ending in a number (us-east-1, us-gov-west-1, eu-central-2). A typo fails validation
# instead of becoming an unreachable endpoint at run time.
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9_+=,.@/-]+$")
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_+=,.@:/-]{2,1224}$")


def _matching(pattern: re.Pattern[str], expected: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"expected {expected}")
        return value

    return AfterValidator(check)


Region = Annotated[str, _matching(_REGION, "an AWS region name such as eu-west-1")]
RoleArn = Annotated[str, _matching(
    _ROLE_ARN, "an IAM role ARN: arn:aws:iam::<12-digit account>:role/<name>")]
ExternalId = Annotated[str, _matching(
    _EXTERNAL_ID, "2 to 1224 characters of letters, digits and _+=,.@:/-")]


TagKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
TagValues = str | Annotated[list[str], Field(min_length=1)]

DEFAULT_MAX_ATTEMPTS = 5
MAX_REGION_WORKERS = 8


class AwsOptions(ProviderOptions):
    """Options every AWS provider shares."""

    regions: Annotated[list[Region], Field(min_length=1)] | None = None
    """Regions to query; default: the region of the environment or profile."""
    profile: str | None = None
    """A named profile of the AWS config files (base credentials and default region)."""
    role_arn: RoleArn | None = None
    """A role assumed through STS in every region before querying it."""
    external_id: ExternalId | None = None
    """The ExternalId the role's trust policy asks for."""
    endpoint_url: str | None = None
    """Send every request (STS included) here: LocalStack, moto, a VPC endpoint."""
    max_attempts: Annotated[int, Field(ge=1, le=20, strict=True)] = DEFAULT_MAX_ATTEMPTS
    """Attempts per request (adaptive retry mode) before the source fails."""
    connect_timeout: Annotated[float, Field(gt=0, le=300, strict=True)] = 5.0
    """Seconds to wait for a connection to an AWS endpoint."""
    read_timeout: Annotated[float, Field(gt=0, le=300, strict=True)] = 20.0
    """Seconds to wait for an answer to one request."""

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, regions: list[str] | None) -> list[str] | None:
        if regions is not None and len(set(regions)) != len(regions):
            raise ValueError("regions are listed more than once")
        return regions

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None:
            split_http_url(url, credentials_instead="the AWS credential chain")
        return url

    @model_validator(mode="after")
    def _external_id_needs_role(self) -> AwsOptions:
        if self.external_id is not None and self.role_arn is None:
            raise ValueError("external_id is only used with role_arn")
        return self


def tag_map(tags: Iterable[Mapping[str, object]] | None) -> dict[str, str]:
    """[{Key, Value}] as returned by EC2 and RDS, as a dict."""
    return {str(t["Key"]): str(t.get("Value", "")) for t in tags or () if "Key" in t}


def tag_values(wanted: TagValues) -> list[str]:
    return [wanted] if isinstance(wanted, str) else list(wanted)


def tags_match(tags: Mapping[str, str], wanted: Mapping[str, TagValues]) -> bool:
    """Every wanted key present with one of its values; `*` and `?` are wildcards, as in EC2
    filters, so that one `tags:` option means the same to both providers."""
    return all(
        key in tags and any(fnmatch.fnmatchcase(tags[key], v) for v in tag_values(values))
        for key, values in wanted.items()
    )


# --- error translation -------------------------------------------------------------------

_THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "RequestLimitExceeded", "TooManyRequestsException",
    "SlowDown", "PriorRequestNotComplete", "BandwidthLimitExceeded", "EC2ThrottledException",
})
_SERVER_TROUBLE = frozenset({
    "InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable",
    "ServiceUnavailableException", "Unavailable", "RequestTimeout", "RequestTimeoutException",
    "IDPCommunicationError",
})
_DENIED = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess",
    "Forbidden",
})
_REJECTED_CREDENTIALS = frozenset({
    "AuthFailure", "UnrecognizedClient", "UnrecognizedClientException",
    "InvalidClientTokenId", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "ExpiredTokenException", "RequestExpired", "OptInRequired", "InvalidIdentityToken",
})
@dataclass(frozen=True)
class AwsCall:
    """What was being done when an error happened, for the message. The core names the
    source."""

    region: str
    action: str

    def prefix(self) -> str:
        return f"{self.action} in {self.region}"


def client_error(err: ClientError, call: AwsCall) -> SourceError:
    """A botocore ClientError (the server answered with an error) as a SourceError."""
    error = err.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    # SignatureDoesNotMatch quotes the whole signed request: its code says enough.
    # Server messages are useful ("... is not authorized to perform ec2:DescribeInstances"),
    # but some services echo request material: redact_remote_message cuts credentials out.
    message = ("" if code == "SignatureDoesNotMatch"
               else redact_remote_message(str(error.get("Message", ""))))
    detail = f"{code}: {message}" if message else code
    if code in _THROTTLING or status == 429:
        return TransientSourceError(
            f"{call.prefix()}: throttled by AWS, retries used up ({detail})")
    if code in _SERVER_TROUBLE or status >= 500:
        return TransientSourceError(f"{call.prefix()}: AWS answered HTTP {status} ({detail})")
    if code in _DENIED:
        return PermanentSourceError(
            f"{call.prefix()}: access denied; the credentials need {call.action} ({detail})")
    if code in _REJECTED_CREDENTIALS:
        return PermanentSourceError(
            f"{call.prefix()}: the credentials were rejected; check the credential chain and "
            f"that region {call.region} is enabled for the account ({detail})")
    return PermanentSourceError(f"{call.prefix()}: {detail}")


def botocore_error(err: Exception, call: AwsCall, known_region: Callable[[], bool]) -> SourceError:
    """A botocore-side failure (no answer from the server, or a local problem)."""
    from botocore import exceptions as bx

    name = type(err).__name__
    if isinstance(err, bx.SSLError):
        # A certificate that does not verify will not verify on the next run either.
        return PermanentSourceError(f"{call.prefix()}: TLS failed ({name})")
    if isinstance(err, bx.EndpointConnectionError) and not known_region():
        # A well-formed region name that no AWS partition knows: its endpoint has no DNS.
        return PermanentSourceError(
            f"{call.prefix()}: unknown region {call.region!r}; its endpoint cannot be reached")
    if isinstance(err, bx.ConnectionError | bx.HTTPClientError | bx.IncompleteReadError
                  | bx.CapacityNotAvailableError):
        return TransientSourceError(f"{call.prefix()}: {name}: {redact_remote_message(str(err))}")
    if isinstance(err, bx.NoCredentialsError | bx.PartialCredentialsError):
        return PermanentSourceError(
            f"{call.prefix()}: no usable AWS credentials found in the standard chain "
            f"(environment, profile, web identity, pod identity): {name}")
    if isinstance(err, bx.ProfileNotFound):
        return PermanentSourceError(f"{call.prefix()}: {redact_remote_message(str(err))}")
    if isinstance(err, bx.InvalidRegionError | bx.NoRegionError):
        return PermanentSourceError(f"{call.prefix()}: bad region {call.region!r} ({name})")
    return PermanentSourceError(f"{call.prefix()}: {name}: {redact_remote_message(str(err))}")


# --- sessions and clients ----------------------------------------------------------------


@functools.cache
def shared_loader() -> Any:
    """botocore's model loader, shared by every session of the process.

    A fresh botocore session parses the endpoint rules and the service model again (several
    MB of JSON, about half a second for EC2) — per region and per run. The loader only
    caches parsed files, so sharing it across threads is safe (at worst a file is parsed
    twice).
    """
    from botocore.loaders import create_loader

    return create_loader()


class AwsAccess:
    """Sessions, client settings and error handling for one configured source.

    A new botocore session per region and per run: sessions are not thread-safe, and
    assumed-role credentials then never outlive a run (a loop run assumes the role again).
    botocore sessions rather than boto3's: boto3 would add its data path to the shared
    loader on every session.
    """

    def __init__(self, options: AwsOptions, context: SourceContext, service: str,
                 provider: str) -> None:
        self.options = options
        self.context = context
        self.service = service
        import_optional("boto3", provider, "aws")  # botocore comes with it
        from botocore.config import Config

        self.config: Config = Config(
            # total_max_attempts counts the first attempt, as the option does;
            # retries.max_attempts would count retries only.
            retries={"mode": "adaptive", "total_max_attempts": options.max_attempts},
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
        )

    @contextmanager
    def translating(self, region: str, action: str) -> Iterator[None]:
        """Turn any boto3/botocore error raised inside into a SourceError naming the region
        and the action. `from None`: the original may carry request details."""
        from botocore import exceptions as bx
        from botocore.parsers import ResponseParserError

        call = AwsCall(region, action)
        try:
            yield
        except bx.ClientError as e:
            raise client_error(e, call) from None
        except bx.BotoCoreError as e:
            raise botocore_error(e, call, lambda: self.known_region(region)) from None
        except ResponseParserError:
            # Not a BotoCoreError; its message quotes the whole body, so it is not shown.
            raise TransientSourceError(f"{call.prefix()}: AWS answered with a body that is "
                                       "not a valid response (malformed XML)") from None

    def botocore_session(self) -> BotocoreSession:
        from botocore.session import Session

        session = Session(profile=self.options.profile)
        session.register_component("data_loader", shared_loader())
        if self.options.profile is not None:
            # Environment variables can answer every lookup without the profile being read:
            # read it now, so that a misspelt profile is an error, not silently ignored.
            session.get_scoped_config()
        return session

    def known_region(self, region: str) -> bool:
        session = self.botocore_session()
        return any(region in session.get_available_regions(self.service, partition)
                   for partition in session.get_available_partitions())

    def regions(self) -> list[str]:
        """The configured regions, else the environment's or the profile's region."""
        if self.options.regions:
            return list(self.options.regions)
        with self.translating("(default region)", "reading the AWS configuration"):
            region = self.botocore_session().get_config_variable("region")
        if not region:
            raise PermanentSourceError(
                "no region: set `regions`, AWS_REGION or AWS_DEFAULT_REGION, or a region in "
                "the profile")
        return [str(region)]

    def client(self, region: str) -> BaseClient:
        """A client of the provider's service in one region, as the role when `role_arn` is
        set. Callers wrap it in `translating`: credentials are resolved on first use."""
        session = self.botocore_session()
        role = self.assume_role(session, region) if self.options.role_arn else None
        return session.create_client(
            self.service, region_name=region, endpoint_url=self.options.endpoint_url,
            config=self.config,
            aws_access_key_id=role["AccessKeyId"] if role else None,
            aws_secret_access_key=role["SecretAccessKey"] if role else None,
            aws_session_token=role["SessionToken"] if role else None)

    def assume_role(self, session: BotocoreSession, region: str) -> CredentialsTypeDef:
        """Temporary credentials of `role_arn`, from the region's own STS endpoint."""
        request: dict[str, Any] = {
            "RoleArn": self.options.role_arn,
            "RoleSessionName": self.role_session_name(),
            # The shortest lifetime STS allows: a run takes seconds.
            "DurationSeconds": 900,
        }
        if self.options.external_id is not None:
            request["ExternalId"] = self.options.external_id
        with self.translating(region, "sts:AssumeRole"):
            sts = cast("STSClient", session.create_client(
                "sts", region_name=region, endpoint_url=self.options.endpoint_url,
                config=self.config))
            return sts.assume_role(**request)["Credentials"]

    def role_session_name(self) -> str:
        """Shows in CloudTrail which source assumed the role."""
        return re.sub(r"[^A-Za-z0-9_+=,.@-]", "-", f"endpoints-sync-{self.context.source}")[:64]

    def each_region(self, work: Callable[[str], list[T]]) -> list[T]:
        """Run `work` for every region concurrently; all results, or one error for all.

        One failed region fails the whole source: publishing the other regions' results
        alone would remove the failed region's addresses from the cluster.
        """
        regions = self.regions()
        errors: list[SourceError] = []
        results: list[T] = []
        with ThreadPoolExecutor(max_workers=min(len(regions), MAX_REGION_WORKERS),
                                thread_name_prefix=f"aws-{self.context.source}") as pool:
            futures = [pool.submit(work, region) for region in regions]
            for future in futures:
                try:
                    results.extend(future.result())
                except SourceError as e:
                    errors.append(e)
        if errors:
            raise combined(errors)
        return results

    def check_locally(self) -> None:
        """For `validate`: the profile exists and a region is known. Contacts nothing."""
        from botocore.exceptions import ProfileNotFound

        try:
            session = self.botocore_session()
        except ProfileNotFound as e:
            raise self.context.config_error("profile", str(e)) from None
        if not self.options.regions and not session.get_config_variable("region"):
            raise self.context.config_error(
                "regions", "no region configured and none in the environment or profile")


def combined(errors: Sequence[SourceError]) -> SourceError:
    """One error for several failed regions: permanent if any is."""
    if len(errors) == 1:
        return errors[0]
    message = "; ".join(map(str, errors))
    if all(e.transient for e in errors):
        return TransientSourceError(message)
    return PermanentSourceError(message)
