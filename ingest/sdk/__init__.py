"""The Python SDK: a producer that validates before it sends, so a bad event fails in the
caller's process with the field named instead of becoming a dead letter later."""
