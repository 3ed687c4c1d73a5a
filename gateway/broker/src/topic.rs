//! Topic names and filters: validation, matching, shared subscriptions.
