"""Notifications: channels (signed webhook, Slack-compatible webhook, SMTP email), the
events that notify, and a durable outbox delivered by one background task per process.

- `events`: the notifying event kinds, and the pure classification of agent events;
- `channels`: validation of a channel's settings (pure) and its API view;
- `messages`: what a delivery says, per channel kind (pure);
- `outbox`: enqueue (idempotent by key), claim a batch, record the outcome; backoff;
- `senders`: the I/O of each channel kind (HTTP POST, SMTP with STARTTLS);
- `notifier`: the loop that scans for new events and delivers what is due.
"""
