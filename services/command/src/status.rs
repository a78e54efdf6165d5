//! The life of an async command as a pure state machine: what each event does to a command's
//! status. Statuses only move forward (QUEUED → SENT → DELIVERED → SUCCEEDED | FAILED, or QUEUED
//! → EXPIRED), so events that arrive late or out of order (a reply before the PUBACK's
//! `delivered`, a redelivered event) change nothing, and every writer can apply its event with
//! compare-and-set without knowing what the others did.

use serde_json::Value;
use tether_contract::{Command, CommandStatus};

/// Aliyun's success code in a device's reply.
pub(crate) const SUCCESS_CODE: i64 = 200;

/// Something that happened to a command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// A queued command is handed to the device's edge.
    Send,
    /// A queued command's TTL ran out.
    Expire,
    /// The device acknowledged the publish (QoS 1 PUBACK).
    Delivered,
    /// The device replied.
    Reply { code: i64, data: Value, message: String },
    /// The platform could not hand the command to the edge; `reason` is kept as the message.
    NotSent { reason: String },
}

/// The status `step` moves a command in `current` to; `None` when it does not apply (already
/// further on, or not a transition of this machine).
pub(crate) fn next_status(current: CommandStatus, step: &Step) -> Option<CommandStatus> {
    use CommandStatus::*;
    match (current, step) {
        (Queued, Step::Send) => Some(Sent),
        (Queued, Step::Expire) => Some(Expired),
        (Sent, Step::Delivered) => Some(Delivered),
        (Sent | Delivered, Step::Reply { code, .. }) => Some(if *code == SUCCESS_CODE { Succeeded } else { Failed }),
        (Queued | Sent, Step::NotSent { .. }) => Some(Failed),
        _ => None,
    }
}

/// Applies `step` to `command` at `now`; returns whether it changed.
pub(crate) fn apply(command: &mut Command, step: &Step, now: i64) -> bool {
    let Some(status) = next_status(command.status, step) else {
        return false;
    };
    command.status = status;
    command.updated_at = now;
    match step {
        Step::Reply { code, data, message } => {
            command.reply_code = Some(*code);
            command.reply_data = Some(data.clone());
            command.reply_message = Some(message.clone());
        }
        Step::NotSent { reason } => command.reply_message = Some(reason.clone()),
        Step::Send | Step::Expire | Step::Delivered => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tether_model::{DeviceName, ProductKey};

    use super::*;

    const ALL: [CommandStatus; 6] = [
        CommandStatus::Queued,
        CommandStatus::Sent,
        CommandStatus::Delivered,
        CommandStatus::Succeeded,
        CommandStatus::Failed,
        CommandStatus::Expired,
    ];

    fn reply(code: i64) -> Step {
        Step::Reply { code, data: json!({"ok": true}), message: "m".into() }
    }

    fn command(status: CommandStatus) -> Command {
        Command {
            message_id: "1".into(),
            product_key: ProductKey::new("pk").unwrap(),
            device_name: DeviceName::new("dn").unwrap(),
            topic: "/sys/pk/dn/thing/service/property/set".into(),
            method: "thing.service.property.set".into(),
            status,
            created_at: 1,
            updated_at: 1,
            expires_at: None,
            reply_code: None,
            reply_data: None,
            reply_message: None,
        }
    }

    /// A total order for "forward": final statuses are all last.
    fn rank(status: CommandStatus) -> u8 {
        match status {
            CommandStatus::Queued => 0,
            CommandStatus::Sent => 1,
            CommandStatus::Delivered => 2,
            CommandStatus::Succeeded | CommandStatus::Failed | CommandStatus::Expired => 3,
        }
    }

    #[test]
    fn the_happy_path_and_its_failures() {
        let mut c = command(CommandStatus::Queued);
        assert!(apply(&mut c, &Step::Send, 2));
        assert!(apply(&mut c, &Step::Delivered, 3));
        assert!(apply(&mut c, &reply(200), 4));
        assert_eq!((c.status, c.updated_at, c.reply_code), (CommandStatus::Succeeded, 4, Some(200)));
        assert_eq!(c.reply_data, Some(json!({"ok": true})));

        let mut c = command(CommandStatus::Sent);
        assert!(apply(&mut c, &reply(460), 2));
        assert_eq!((c.status, c.reply_code), (CommandStatus::Failed, Some(460)));
    }

    #[test]
    fn a_reply_may_overtake_the_delivered_event_and_the_late_event_changes_nothing() {
        let mut c = command(CommandStatus::Sent);
        assert!(apply(&mut c, &reply(200), 5));
        assert!(!apply(&mut c, &Step::Delivered, 6));
        assert_eq!((c.status, c.updated_at), (CommandStatus::Succeeded, 5));
    }

    #[test]
    fn only_queued_commands_expire_or_are_sent_from_the_queue() {
        for status in ALL {
            let expected = (status == CommandStatus::Queued).then_some(CommandStatus::Expired);
            assert_eq!(next_status(status, &Step::Expire), expected, "{status:?}");
            let expected = (status == CommandStatus::Queued).then_some(CommandStatus::Sent);
            assert_eq!(next_status(status, &Step::Send), expected, "{status:?}");
        }
        // An expired command is never sent, a sent one never expires.
        let mut c = command(CommandStatus::Queued);
        assert!(apply(&mut c, &Step::Send, 2));
        assert!(!apply(&mut c, &Step::Expire, 3));
        assert_eq!(c.status, CommandStatus::Sent);
    }

    #[test]
    fn statuses_only_move_forward_and_final_ones_never_change() {
        let steps =
            [Step::Send, Step::Expire, Step::Delivered, reply(200), reply(500), Step::NotSent { reason: "x".into() }];
        for status in ALL {
            for step in &steps {
                if let Some(next) = next_status(status, step) {
                    assert!(rank(next) > rank(status), "{status:?} --{step:?}--> {next:?}");
                    assert!(rank(status) < 3, "{status:?} is final but {step:?} moved it");
                }
            }
        }
    }

    #[test]
    fn a_command_that_could_not_be_sent_fails_with_the_reason() {
        let mut c = command(CommandStatus::Queued);
        assert!(apply(&mut c, &Step::NotSent { reason: "not sent: bus closed".into() }, 2));
        assert_eq!(c.status, CommandStatus::Failed);
        assert_eq!(c.reply_message.as_deref(), Some("not sent: bus closed"));
        assert_eq!(c.reply_code, None);
    }
}
