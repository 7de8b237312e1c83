"""Request and response bodies of the OpenAI-compatible API (the subset this server implements).

    python -c "from serving.schemas import ChatCompletionRequest; print(ChatCompletionRequest.model_json_schema())"

Types are strict: "5" is not an int and 1 is not a bool, so a client bug gets a 400 naming the
field instead of a silent coercion. Unknown fields are ignored, as OpenAI-compatible servers do,
so that the official client's optional fields never break a request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

Float = Annotated[float, Field(strict=True)]  # strict float still accepts JSON integers
# Text that must say something: one non-whitespace character (a JSON-schema pattern is a search).
Text = Annotated[StrictStr, Field(min_length=1, pattern=r"\S")]
# serving.app.ServeLimits' defaults; create_app writes a server's own limits into its OpenAPI.
MAX_TOKENS_CAP = 512
MAX_PROMPT_CHARS = 16_000


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    """A system, developer or assistant message: context or history; its content may be empty."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "assistant"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class UserTextPart(TextPart):
    text: Annotated[StrictStr, Field(max_length=MAX_PROMPT_CHARS)]


class UserMessage(ChatMessage):
    """A question: a user message whose text says something."""

    role: Literal["user"]  # type: ignore[assignment]
    content: (Annotated[Text, Field(max_length=MAX_PROMPT_CHARS)]  # type: ignore[assignment]
              | Annotated[list[UserTextPart], Field(min_length=1, max_length=32)])


Message = Annotated[UserMessage | ChatMessage, Field(discriminator="role")]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS_CAP)] | None = None
    temperature: Annotated[Float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Float, Field(gt=0.0, le=1.0)] | None = None
    frequency_penalty: Annotated[Float, Field(ge=-2.0, le=2.0)] | None = None
    presence_penalty: Annotated[Float, Field(ge=-2.0, le=2.0)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=1, description="Only one choice per request.")] = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None = None
    seed: StrictInt | None = None
    user: StrictStr | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_Sampling):
    # The last message is the question; earlier ones are context (system, developer) or history.
    messages: Annotated[list[Message], Field(min_length=1, max_length=64, json_schema_extra={
        "contains": {"type": "object", "properties": {"role": {"const": "user"}}, "required": ["role"]}})]
    max_completion_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS_CAP)] | None = None


PromptText = Annotated[StrictStr, Field(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=r"\S")]


class CompletionRequest(_Sampling):
    prompt: PromptText | Annotated[list[PromptText], Field(min_length=1, max_length=32)]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llmops"
    # Extensions (clients ignore unknown fields): the model's chat template, so a client that sends
    # raw /v1/completions prompts renders them as the server's chat route does.
    chat_template: str | None = None
    special_tokens: dict[str, str] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChatChoice(BaseModel):
    index: int
    message: dict[str, Any]
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    llmops_receipt: str | None = None
    """Extension: what POST /v1/feedback takes to rate this answer (serving/receipts.py)."""


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
