//! Where a session's conversation stands, and what follows the answer it waits for.

/// Where the conversation stands. Names follow RFC 3501's states where one exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the transport.
    Connecting,
    /// Waiting for the server greeting.
    Greeting,
    /// CAPABILITY sent; `then` says what follows.
    Capability {
        then: AfterCapability,
    },
    /// STARTTLS sent.
    StartTls,
    /// STARTTLS accepted; the caller runs the TLS handshake.
    TlsHandshake,
    /// LOGIN or AUTHENTICATE sent.
    Authenticating,
    /// ID sent (RFC 2971), when the server offers it.
    Id,
    /// EXAMINE sent.
    Examining,
    /// STATUS sent for the other mailbox `index`.
    Status {
        index: u8,
        purpose: StatusPurpose,
    },
    /// NOTIFY SET sent.
    Notify,
    /// IDLE sent, waiting for `+`.
    IdleStarting,
    /// In IDLE.
    Idling,
    /// DONE sent, waiting for IDLE's tagged OK.
    IdleDone,
    /// NOOP sent.
    Noop,
    /// `UID FETCH` of new messages' header fields sent (filter or preview).
    Fetching,
    /// Waiting for the next NOOP.
    PollWait,
    /// LOGOUT sent.
    LoggingOut,
    Ended,
}

/// Why a round of STATUS commands runs, which says what follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPurpose {
    /// Baselines at setup; a missing mailbox fails the session.
    Setup,
    /// Polling a server without NOTIFY.
    Poll,
    /// Catching up after NOTIFICATIONOVERFLOW, before NOTIFY SET again.
    Resync,
}

/// What follows the tagged OK that answers DONE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterDone {
    Idle,
    StatusPoll,
    Resync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterCapability {
    /// Not authenticated yet: STARTTLS or log in.
    Login,
    /// Authenticated: EXAMINE.
    Examine,
}
