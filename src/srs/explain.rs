//! What one SRS address says, field by field, and why it is accepted or refused: the
//! codec's half of `srs-relay explain`. The verdict is [`Srs::decode_at`]'s own answer,
//! so an explanation never disagrees with what the relay does.

use super::parts::{self, Parts};
use super::{Decoded, RELAY_USER, ReverseError, Srs, address, render_part, timestamp};

/// The form of an SRS address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressForm {
    /// `user+SRS=HASH=TT=domain=local@forwarder`
    Microsoft,
    /// `SRS0=HHHH=TT=domain=local@forwarder`
    Srs0,
    /// `SRS1=HHHH=hop==rest@forwarder`
    Srs1,
    /// `bounces+SRS=TOKENCHECK=TT@forwarder`
    Stored,
}

impl AddressForm {
    pub fn describe(self) -> &'static str {
        match self {
            AddressForm::Microsoft => "Microsoft (+SRS=)",
            AddressForm::Srs0 => "classic SRS0",
            AddressForm::Srs1 => "classic SRS1 (forwarded again)",
            AddressForm::Stored => "stored (bounces+SRS= token)",
        }
    }
}

/// One SRS address taken apart and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examination {
    pub form: AddressForm,
    /// The address's domain: the forwarder that made it.
    pub forwarder: String,
    /// Microsoft form: the alias user the hash is bound to.
    pub alias_user: Option<String>,
    /// Microsoft form whose hash does not verify for its alias user: the candidate user
    /// (see [`Srs::examine_at`]) it does verify for.
    pub made_for: Option<String>,
    /// SRS1: the previous forwarder, where a bounce goes back to.
    pub hop: Option<String>,
    /// Stored form: the token the relay's store keeps the sender under.
    pub token: Option<String>,
    /// What it stands for, as written in it: the original sender (SRS0, Microsoft) or
    /// the SRS0 address at the previous forwarder (SRS1).
    pub decodes_to: Option<String>,
    /// Days since it was made (forms with a timestamp; one from the future looks ~1024
    /// days old).
    pub age_days: Option<u32>,
    pub max_age_days: u32,
    /// The configured secret (index from 0, the order of the secrets file) that signed it.
    pub signed_by: Option<usize>,
    /// What reversing it gives: exactly [`Srs::decode_at`]'s answer.
    pub verdict: Result<Decoded, ReverseError>,
}

impl Srs {
    /// Takes `address` apart and checks it at `now`. `candidate_users` (the alias users the
    /// caller knows) are tried when a Microsoft-form hash does not verify for its own user,
    /// to tell "made for another alias" from "not ours". Errors: `NotSrs`, or `Malformed`
    /// saying which field.
    pub fn examine_at(
        &self,
        address: &str,
        now: u64,
        candidate_users: &[&str],
    ) -> Result<Examination, ReverseError> {
        let mailbox = address::parse(address).map_err(|_| ReverseError::NotSrs)?;
        let verdict = self.decode_at(address, now);
        let mut e = Examination {
            form: AddressForm::Microsoft,
            forwarder: mailbox.domain.to_owned(),
            alias_user: None,
            made_for: None,
            hop: None,
            token: None,
            decodes_to: None,
            age_days: None,
            max_age_days: self.options.max_age_days,
            signed_by: None,
            verdict,
        };
        if let Some(stored) = self.stored_parts(&mailbox.local) {
            let p = stored?;
            e.form = AddressForm::Stored;
            e.age_days = Some(timestamp::age_days(p.slot, now));
            e.signed_by = self.stored_signer(&p);
            e.alias_user = Some(RELAY_USER.to_owned());
            e.token = Some(p.token);
            return Ok(e);
        }
        let parts = parts::split(&mailbox.local)?;
        e.signed_by = self.signer(&parts);
        match parts {
            Parts::Srs0 {
                slot,
                domain,
                local,
                ..
            } => {
                e.form = AddressForm::Srs0;
                e.age_days = Some(timestamp::age_days(slot, now));
                e.decodes_to = Some(render_part(&mailbox, local, domain));
            }
            Parts::Srs1 { hop, rest, .. } => {
                e.form = AddressForm::Srs1;
                e.hop = Some(hop.to_owned());
                e.decodes_to = Some(address::render(&format!("SRS0{rest}"), hop));
            }
            Parts::Microsoft {
                user,
                hash,
                tt,
                slot,
                domain,
                local,
            } => {
                e.age_days = Some(timestamp::age_days(slot, now));
                e.alias_user = Some(user.to_owned());
                e.decodes_to = Some(render_part(&mailbox, local, domain));
                if e.signed_by.is_none() {
                    e.made_for = candidate_users
                        .iter()
                        .filter(|c| !c.eq_ignore_ascii_case(user))
                        .find(|c| {
                            let p = Parts::Microsoft {
                                user: c,
                                hash,
                                tt,
                                slot,
                                domain,
                                local,
                            };
                            self.signer(&p).is_some()
                        })
                        .map(|c| (*c).to_owned());
                }
            }
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srs::Options;

    const NOW: u64 = 1_577_836_860;
    const DAY: u64 = 86_400;

    fn srs(secrets: &[&str]) -> Srs {
        Srs::new(secrets, Options::default()).unwrap()
    }

    #[test]
    fn microsoft_form_field_by_field() {
        let a = srs(&["s1"])
            .forward_at("Bob@Example.org", "john@fwd.example", NOW)
            .unwrap();
        let e = srs(&["new", "s1"])
            .examine_at(&a, NOW + 3 * DAY, &[])
            .unwrap();
        assert_eq!(e.form, AddressForm::Microsoft);
        assert_eq!(e.forwarder, "fwd.example");
        assert_eq!(e.alias_user.as_deref(), Some("john"));
        assert_eq!(e.decodes_to.as_deref(), Some("Bob@Example.org"));
        assert_eq!(e.age_days, Some(3));
        assert_eq!(e.signed_by, Some(1));
        assert_eq!(e.verdict, Ok(Decoded::Address("Bob@Example.org".into())));

        let old = srs(&["s1"]).examine_at(&a, NOW + 30 * DAY, &[]).unwrap();
        assert_eq!(old.signed_by, Some(0));
        assert_eq!(
            old.verdict,
            Err(ReverseError::Expired {
                age_days: 30,
                max_age_days: 21
            })
        );
    }

    #[test]
    fn another_alias_is_named_when_a_candidate_signs() {
        let a = srs(&["s1"])
            .forward_at("bob@example.org", "john@fwd.example", NOW)
            .unwrap();
        let moved = a.replacen("john+", "mary+", 1);
        let e = srs(&["s1"])
            .examine_at(&moved, NOW, &["mary", "john", "zed"])
            .unwrap();
        assert_eq!(e.signed_by, None);
        assert_eq!(e.made_for.as_deref(), Some("john"));
        assert_eq!(e.verdict, Err(ReverseError::BadHash));
        let e = srs(&["other"])
            .examine_at(&a, NOW, &["john", "mary"])
            .unwrap();
        assert_eq!((e.signed_by, e.made_for), (None, None));
    }

    #[test]
    fn classic_stored_and_not_srs() {
        let options = Options {
            format: crate::srs::Format::Classic,
            ..Options::default()
        };
        let classic = Srs::new(&["s1"], options).unwrap();
        let srs0 = classic
            .forward_at("bob@example.org", "a@hop1.example", NOW)
            .unwrap();
        let e = classic.examine_at(&srs0, NOW, &[]).unwrap();
        assert_eq!(e.form, AddressForm::Srs0);
        assert_eq!(e.decodes_to.as_deref(), Some("bob@example.org"));
        let srs1 = classic.forward_at(&srs0, "a@hop2.example", NOW).unwrap();
        let e = classic.examine_at(&srs1, NOW, &[]).unwrap();
        assert_eq!(e.form, AddressForm::Srs1);
        assert_eq!(e.hop.as_deref(), Some("hop1.example"));
        assert_eq!(e.decodes_to.as_deref(), Some(srs0.as_str()));
        assert_eq!(e.age_days, None);

        let token = "ABCDEFGHIJKLMNOP";
        let stored = classic.stored_address_at(token, "relay.example", NOW);
        let e = classic.examine_at(&stored, NOW + DAY, &[]).unwrap();
        assert_eq!(e.form, AddressForm::Stored);
        assert_eq!(e.token.as_deref(), Some(token));
        assert_eq!((e.signed_by, e.age_days), (Some(0), Some(1)));

        assert_eq!(
            classic.examine_at("bob@example.org", NOW, &[]),
            Err(ReverseError::NotSrs)
        );
        assert_eq!(
            classic.examine_at("SRS0=abcd=11=example.org=bob@fwd.example", NOW, &[]),
            Err(ReverseError::Malformed("bad timestamp"))
        );
    }
}
