"""Chat finish reasons that end an answer before the model did, as the surfaces that
translate chat answers (Messages, Responses) tell them to their clients; pure."""

# Finish reasons with which a provider says it stopped generating for a cause of its own,
# neither the output limit nor a content filter, and what each means: DeepSeek documents
# insufficient_system_resource; MiMo ends an answer caught looping with
# repetition_truncation (as its clients report; its reference lists no values).
# The answer delivered is billed as any other; the surfaces say that it is incomplete, as
# they say of a stream the upstream broke, so that a client (a coding agent) does not take
# it as a whole answer.
INTERRUPTED = {
    "insufficient_system_resource": "The provider stopped generating the answer for lack of "
                                    "resources (finish_reason insufficient_system_resource): "
                                    "it is incomplete.",
    "repetition_truncation": "The provider cut the answer off because it kept repeating "
                             "itself (finish_reason repetition_truncation): it is incomplete.",
}
