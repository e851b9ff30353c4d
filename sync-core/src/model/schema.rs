//! The shape of the case and coordination documents: sections, collections,
//! their fields and the typed structs a read fills.
//!
//! Each field enum and its struct are generated together by `record!`, so
//! the key a field is written under and the key it is read from cannot
//! drift apart.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{ObjId, ReadDoc};

use super::date::FuzzyDate;
use super::error::ModelError;
use super::read::Reader;
use super::values::{FieldKind, ItemId, Register, Status};

/// The template version this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u64 = 1;

/// Root key naming the document's kind.
pub(crate) const KIND_KEY: &str = "kind";
pub(crate) const SCHEMA_KEY: &str = "schema_version";
pub(crate) const CREATED_AT_KEY: &str = "created_at";
pub(crate) const CREATED_BY_KEY: &str = "created_by";
pub(crate) const DELETED_AT_KEY: &str = "deleted_at";
pub(crate) const DELETED_BY_KEY: &str = "deleted_by";
/// Case root: the coordination document's id.
pub(crate) const COORDINATION_KEY: &str = "coordination";
/// Coordination root: the case document's id.
pub(crate) const CASE_KEY: &str = "case";

/// Which of the two documents of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// Written by relatives and coordinators.
    Case,
    /// Written by coordinators only, readable by relatives.
    Coordination,
}

impl DocKind {
    /// The value of the root `kind` key.
    pub fn tag(self) -> &'static str {
        match self {
            DocKind::Case => "casesync.case",
            DocKind::Coordination => "casesync.coordination",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DocKind::Case => "case",
            DocKind::Coordination => "coordination",
        }
    }
}

/// The Rust type a read gives for each field kind.
macro_rules! kind_type {
    (Str) => { Register<String> };
    (Date) => { Register<FuzzyDate> };
    (Int) => { Register<i64> };
    (Status) => { Register<Status> };
    (Text) => { Option<String> };
    (SourceIds) => { BTreeSet<ItemId> };
    (Replies) => { BTreeMap<ItemId, Item<Reply>> };
}

macro_rules! read_kind {
    (Str, $r:expr, $obj:expr, $key:expr, $path:expr) => {
        $r.str_register($obj, $key, $path)
    };
    (Date, $r:expr, $obj:expr, $key:expr, $path:expr) => {
        $r.date_register($obj, $key, $path)
    };
    (Int, $r:expr, $obj:expr, $key:expr, $path:expr) => {
        $r.int_register($obj, $key, $path)
    };
    (Status, $r:expr, $obj:expr, $key:expr, $path:expr) => {
        $r.status_register($obj, $key, $path)
    };
    (Text, $r:expr, $obj:expr, $key:expr, $path:expr) => {
        $r.narrative($obj, $key, $path)
    };
    (SourceIds, $r:expr, $obj:expr, $key:expr, $path:expr) => {
        $r.source_ids($obj, $key, $path)
    };
    (Replies, $r:expr, $obj:expr, $key:expr, $path:expr) => {
        $r.collection($obj, $key, $path, Reply::read)
    };
}

macro_rules! record {
    (
        $(#[$smeta:meta])*
        pub struct $name:ident;
        $(#[$emeta:meta])*
        pub enum $field_enum:ident {
            $( $(#[$fmeta:meta])* $variant:ident => $field:ident : $kind:ident = $key:literal, )*
        }
    ) => {
        $(#[$emeta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $field_enum {
            $( $(#[$fmeta])* $variant, )*
        }

        impl $field_enum {
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The key the field is stored under.
            pub fn key(self) -> &'static str {
                match self { $(Self::$variant => $key,)* }
            }

            pub fn kind(self) -> FieldKind {
                match self { $(Self::$variant => FieldKind::$kind,)* }
            }
        }

        $(#[$smeta])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: kind_type!($kind), )*
        }

        impl $name {
            pub(crate) fn read<D: ReadDoc>(
                r: &Reader<'_, D>,
                obj: &ObjId,
                path: &str,
            ) -> Result<Self, ModelError> {
                Ok(Self {
                    $( $field: read_kind!($kind, r, obj, $key, path)?, )*
                })
            }
        }
    };
}

// ---------------------------------------------------------------- sections

record! {
    /// `person`: who is missing.
    pub struct Person;
    /// A register or narrative of `person`.
    pub enum PersonField {
        GivenName => given_name: Str = "given_name",
        Patronymic => patronymic: Str = "patronymic",
        FamilyName => family_name: Str = "family_name",
        Sex => sex: Str = "sex",
        DateOfBirth => date_of_birth: Date = "date_of_birth",
        PlaceOfBirth => place_of_birth: Str = "place_of_birth",
        Citizenship => citizenship: Str = "citizenship",
        BloodType => blood_type: Str = "blood_type",
        HeightCm => height_cm: Int = "height_cm",
        /// Physical description, in the family's words.
        Description => description: Text = "description",
    }
}

record! {
    /// `military`: service details.
    pub struct Military;
    /// A register of `military`.
    pub enum MilitaryField {
        Branch => branch: Str = "branch",
        Unit => unit: Str = "unit",
        Rank => rank: Str = "rank",
        Position => position: Str = "position",
        ServiceNumber => service_number: Str = "service_number",
        CallSign => call_sign: Str = "call_sign",
        /// Conscript, contract, mobilized, volunteer, territorial defence...
        EnlistmentType => enlistment_type: Str = "enlistment_type",
    }
}

record! {
    /// `disappearance`: when, where and how contact was lost.
    pub struct Disappearance;
    /// A register or narrative of `disappearance`.
    pub enum DisappearanceField {
        /// Usually a range.
        Date => date: Date = "date",
        Place => place: Str = "place",
        LastContactOn => last_contact_on: Date = "last_contact_on",
        /// Who had the last contact.
        LastContactWith => last_contact_with: Str = "last_contact_with",
        /// Phone call, messenger, letter...
        LastContactChannel => last_contact_channel: Str = "last_contact_channel",
        LastContactDetails => last_contact_details: Text = "last_contact_details",
        Circumstances => circumstances: Text = "circumstances",
    }
}

record! {
    /// `burial`: where the person is buried, once known.
    pub struct Burial;
    /// A register or narrative of `burial`.
    pub enum BurialField {
        Place => place: Str = "place",
        Cemetery => cemetery: Str = "cemetery",
        Grave => grave: Str = "grave",
        BuriedOn => buried_on: Date = "buried_on",
        Notes => notes: Text = "notes",
    }
}

record! {
    /// `official_status` (coordination document): what a coordinator has
    /// established, and on which sources.
    pub struct OfficialStatus;
    /// A field of `official_status`.
    pub enum OfficialStatusField {
        Status => status: Status = "status",
        SetBy => set_by: Str = "set_by",
        /// Milliseconds since the Unix epoch.
        SetAt => set_at: Int = "set_at",
        Note => note: Text = "note",
        /// Ids of sources in the case document.
        Basis => basis: SourceIds = "basis",
    }
}

record! {
    /// `closure` (coordination document).
    pub struct Closure;
    /// A field of `closure`.
    pub enum ClosureField {
        /// `open` or `closed`.
        State => state: Str = "state",
        ClosedOn => closed_on: Date = "closed_on",
        Reason => reason: Str = "reason",
        Summary => summary: Text = "summary",
    }
}

// ------------------------------------------------------------ collections

record! {
    /// An item of `person.name_variants`: a spelling, transliteration,
    /// maiden name, nickname or call sign.
    pub struct NameVariant;
    pub enum NameVariantField {
        Name => name: Str = "name",
        Kind => kind: Str = "kind",
        Script => script: Str = "script",
        Language => language: Str = "language",
        Note => note: Text = "note",
    }
}

record! {
    /// An item of `person.distinguishing_marks`: tattoo, scar, birthmark...
    pub struct DistinguishingMark;
    pub enum DistinguishingMarkField {
        Kind => kind: Str = "kind",
        BodyLocation => body_location: Str = "body_location",
        Description => description: Text = "description",
    }
}

record! {
    /// An item of `person.medical_devices`: implants, prostheses, dental
    /// work, each with its serial number.
    pub struct MedicalDevice;
    pub enum MedicalDeviceField {
        Kind => kind: Str = "kind",
        Manufacturer => manufacturer: Str = "manufacturer",
        Model => model: Str = "model",
        Serial => serial: Str = "serial",
        BodyLocation => body_location: Str = "body_location",
        Description => description: Text = "description",
    }
}

record! {
    /// An item of `person.personal_effects`: what the person carried.
    pub struct PersonalEffect;
    pub enum PersonalEffectField {
        Name => name: Str = "name",
        Serial => serial: Str = "serial",
        Description => description: Text = "description",
    }
}

record! {
    /// An item of `status_claims`: what someone says happened, citing
    /// sources. Contradicting claims are normal and all stay visible.
    pub struct StatusClaim;
    pub enum StatusClaimField {
        Status => status: Status = "status",
        /// Who says so (a comrade, an official letter...).
        ClaimedBy => claimed_by: Str = "claimed_by",
        /// When the status is said to have applied.
        AsOf => as_of: Date = "as_of",
        Statement => statement: Text = "statement",
        Sources => source_ids: SourceIds = "source_ids",
    }
}

record! {
    /// An item of `sources`: a piece of evidence with its provenance.
    pub struct Source;
    pub enum SourceField {
        /// Testimony, document, photo, video, official reply, social media...
        Kind => kind: Str = "kind",
        Title => title: Str = "title",
        ObtainedOn => obtained_on: Date = "obtained_on",
        ObtainedBy => obtained_by: Str = "obtained_by",
        /// Confirmed, probable, possible, doubtful, unknown.
        Reliability => reliability: Str = "reliability",
        /// How the family came by it.
        Provenance => provenance: Text = "provenance",
        Summary => summary: Text = "summary",
    }
}

record! {
    /// An item of `requests.<id>.replies`.
    pub struct Reply;
    pub enum ReplyField {
        ReceivedOn => received_on: Date = "received_on",
        From => from: Str = "from",
        ReferenceNumber => reference_number: Str = "reference_number",
        Outcome => outcome: Str = "outcome",
        Summary => summary: Text = "summary",
    }
}

record! {
    /// An item of `requests`: a request to an authority, with its replies.
    pub struct Request;
    pub enum RequestField {
        Authority => authority: Str = "authority",
        Channel => channel: Str = "channel",
        ReferenceNumber => reference_number: Str = "reference_number",
        SentOn => sent_on: Date = "sent_on",
        Subject => subject: Str = "subject",
        Summary => summary: Text = "summary",
        Replies => replies: Replies = "replies",
    }
}

record! {
    /// An item of `external_refs`: the case's number in another register
    /// (ICRC, a ministry, the police...).
    pub struct ExternalRef;
    pub enum ExternalRefField {
        System => system: Str = "system",
        Reference => reference: Str = "reference",
        Note => note: Text = "note",
    }
}

record! {
    /// An item of `dna`: a reference sample given by a relative.
    pub struct DnaSample;
    pub enum DnaSampleField {
        DonorRelation => donor_relation: Str = "donor_relation",
        Lab => lab: Str = "lab",
        SampleReference => sample_reference: Str = "sample_reference",
        TakenOn => taken_on: Date = "taken_on",
        State => state: Str = "state",
        Note => note: Text = "note",
    }
}

record! {
    /// An item of `remains`: a report of remains that may be the person's.
    pub struct RemainsReport;
    pub enum RemainsField {
        FoundOn => found_on: Date = "found_on",
        Place => place: Str = "place",
        Reference => reference: Str = "reference",
        Identification => identification: Str = "identification",
        Note => note: Text = "note",
    }
}

record! {
    /// An item of `timeline`.
    pub struct TimelineEntry;
    pub enum TimelineField {
        Date => date: Date = "date",
        Title => title: Str = "title",
        Place => place: Str = "place",
        Description => description: Text = "description",
        Sources => source_ids: SourceIds = "source_ids",
    }
}

record! {
    /// An item of `attachments`: metadata only, the bytes live elsewhere.
    pub struct Attachment;
    pub enum AttachmentField {
        FileName => file_name: Str = "file_name",
        MediaType => media_type: Str = "media_type",
        SizeBytes => size_bytes: Int = "size_bytes",
        Sha256 => sha256: Str = "sha256",
        StorageRef => storage_ref: Str = "storage_ref",
        SourceId => source_id: Str = "source_id",
        Caption => caption: Str = "caption",
    }
}

record! {
    /// An item of `links`: another case that may be the same person or the
    /// same event.
    pub struct CaseLink;
    pub enum LinkField {
        /// The other case's document id.
        Case => case: Str = "case",
        /// possible_duplicate, same_event, related.
        Kind => kind: Str = "kind",
        Note => note: Text = "note",
    }
}

record! {
    /// An item of `source_verification` (coordination document): a
    /// coordinator's verdict on one source of the case.
    pub struct SourceVerification;
    pub enum SourceVerificationField {
        SourceId => source_id: Str = "source_id",
        /// verified, unverified, disputed, false.
        Verdict => verdict: Str = "verdict",
        VerifiedBy => verified_by: Str = "verified_by",
        Note => note: Text = "note",
    }
}

record! {
    /// An item of `duplicates` (coordination document).
    pub struct DuplicateLink;
    pub enum DuplicateField {
        Case => case: Str = "case",
        /// duplicate_of, possible_duplicate, not_duplicate.
        Kind => kind: Str = "kind",
        Note => note: Text = "note",
    }
}

/// An item of any collection, with its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<T> {
    pub id: ItemId,
    /// Milliseconds since the Unix epoch.
    pub created_at: Option<i64>,
    pub created_by: Option<String>,
    /// Set when the item was soft-deleted (milliseconds since the Unix
    /// epoch); a delete racing a restore shows as a conflict.
    pub deleted_at: Register<i64>,
    pub deleted_by: Register<String>,
    pub fields: T,
}

impl<T> Item<T> {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.value().is_some()
    }
}

// ------------------------------------------------------- addressing fields

/// A section: a map the template creates at the root of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    Person,
    Military,
    Disappearance,
    Burial,
    OfficialStatus,
    Closure,
}

impl Section {
    pub const ALL: [Section; 6] = [
        Section::Person,
        Section::Military,
        Section::Disappearance,
        Section::Burial,
        Section::OfficialStatus,
        Section::Closure,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Section::Person => "person",
            Section::Military => "military",
            Section::Disappearance => "disappearance",
            Section::Burial => "burial",
            Section::OfficialStatus => "official_status",
            Section::Closure => "closure",
        }
    }

    pub fn doc(self) -> DocKind {
        match self {
            Section::OfficialStatus | Section::Closure => DocKind::Coordination,
            _ => DocKind::Case,
        }
    }

    /// Key and kind of every field, for the template.
    pub(crate) fn field_specs(self) -> Vec<(&'static str, FieldKind)> {
        fn specs<F: Copy>(
            all: &[F],
            key: fn(F) -> &'static str,
            kind: fn(F) -> FieldKind,
        ) -> Vec<(&'static str, FieldKind)> {
            all.iter().map(|f| (key(*f), kind(*f))).collect()
        }
        match self {
            Section::Person => specs(PersonField::ALL, PersonField::key, PersonField::kind),
            Section::Military => specs(MilitaryField::ALL, MilitaryField::key, MilitaryField::kind),
            Section::Disappearance => specs(
                DisappearanceField::ALL,
                DisappearanceField::key,
                DisappearanceField::kind,
            ),
            Section::Burial => specs(BurialField::ALL, BurialField::key, BurialField::kind),
            Section::OfficialStatus => specs(
                OfficialStatusField::ALL,
                OfficialStatusField::key,
                OfficialStatusField::kind,
            ),
            Section::Closure => specs(ClosureField::ALL, ClosureField::key, ClosureField::kind),
        }
    }
}

/// A register or narrative of a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Person(PersonField),
    Military(MilitaryField),
    Disappearance(DisappearanceField),
    Burial(BurialField),
    OfficialStatus(OfficialStatusField),
    Closure(ClosureField),
}

impl Field {
    pub fn section(self) -> Section {
        match self {
            Field::Person(_) => Section::Person,
            Field::Military(_) => Section::Military,
            Field::Disappearance(_) => Section::Disappearance,
            Field::Burial(_) => Section::Burial,
            Field::OfficialStatus(_) => Section::OfficialStatus,
            Field::Closure(_) => Section::Closure,
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Field::Person(f) => f.key(),
            Field::Military(f) => f.key(),
            Field::Disappearance(f) => f.key(),
            Field::Burial(f) => f.key(),
            Field::OfficialStatus(f) => f.key(),
            Field::Closure(f) => f.key(),
        }
    }

    pub fn kind(self) -> FieldKind {
        match self {
            Field::Person(f) => f.kind(),
            Field::Military(f) => f.kind(),
            Field::Disappearance(f) => f.kind(),
            Field::Burial(f) => f.kind(),
            Field::OfficialStatus(f) => f.kind(),
            Field::Closure(f) => f.kind(),
        }
    }

    /// `military.unit`
    pub fn path(self) -> String {
        format!("{}.{}", self.section().key(), self.key())
    }
}

/// A collection: a map from caller-drawn [`ItemId`] to item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    NameVariants,
    DistinguishingMarks,
    MedicalDevices,
    PersonalEffects,
    StatusClaims,
    Sources,
    Requests,
    /// The replies of one request; address them with
    /// [`ItemRef::reply`].
    RequestReplies,
    ExternalRefs,
    Dna,
    Remains,
    Timeline,
    Attachments,
    Links,
    SourceVerification,
    Duplicates,
}

impl Collection {
    pub const ALL: [Collection; 16] = [
        Collection::NameVariants,
        Collection::DistinguishingMarks,
        Collection::MedicalDevices,
        Collection::PersonalEffects,
        Collection::StatusClaims,
        Collection::Sources,
        Collection::Requests,
        Collection::RequestReplies,
        Collection::ExternalRefs,
        Collection::Dna,
        Collection::Remains,
        Collection::Timeline,
        Collection::Attachments,
        Collection::Links,
        Collection::SourceVerification,
        Collection::Duplicates,
    ];

    /// Where the template puts the collection. Replies live inside each
    /// request instead, under `requests.<id>.replies`.
    pub fn path(self) -> &'static [&'static str] {
        match self {
            Collection::NameVariants => &["person", "name_variants"],
            Collection::DistinguishingMarks => &["person", "distinguishing_marks"],
            Collection::MedicalDevices => &["person", "medical_devices"],
            Collection::PersonalEffects => &["person", "personal_effects"],
            Collection::StatusClaims => &["status_claims"],
            Collection::Sources => &["sources"],
            Collection::Requests => &["requests"],
            Collection::RequestReplies => &["replies"],
            Collection::ExternalRefs => &["external_refs"],
            Collection::Dna => &["dna"],
            Collection::Remains => &["remains"],
            Collection::Timeline => &["timeline"],
            Collection::Attachments => &["attachments"],
            Collection::Links => &["links"],
            Collection::SourceVerification => &["source_verification"],
            Collection::Duplicates => &["duplicates"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Collection::NameVariants => "person.name_variants",
            Collection::DistinguishingMarks => "person.distinguishing_marks",
            Collection::MedicalDevices => "person.medical_devices",
            Collection::PersonalEffects => "person.personal_effects",
            Collection::RequestReplies => "requests.*.replies",
            other => other.path()[0],
        }
    }

    pub fn doc(self) -> DocKind {
        match self {
            Collection::SourceVerification | Collection::Duplicates => DocKind::Coordination,
            _ => DocKind::Case,
        }
    }

    /// Collections the template creates (every one but the replies, which
    /// each request gets when it is added).
    pub(crate) fn in_template(self, doc: DocKind) -> bool {
        self != Collection::RequestReplies && self.doc() == doc
    }

    /// Key and kind of every field of an item.
    pub(crate) fn field_specs(self) -> Vec<(&'static str, FieldKind)> {
        fn specs<F: Copy>(
            all: &[F],
            key: fn(F) -> &'static str,
            kind: fn(F) -> FieldKind,
        ) -> Vec<(&'static str, FieldKind)> {
            all.iter().map(|f| (key(*f), kind(*f))).collect()
        }
        use Collection as C;
        match self {
            C::NameVariants => specs(
                NameVariantField::ALL,
                NameVariantField::key,
                NameVariantField::kind,
            ),
            C::DistinguishingMarks => specs(
                DistinguishingMarkField::ALL,
                DistinguishingMarkField::key,
                DistinguishingMarkField::kind,
            ),
            C::MedicalDevices => specs(
                MedicalDeviceField::ALL,
                MedicalDeviceField::key,
                MedicalDeviceField::kind,
            ),
            C::PersonalEffects => specs(
                PersonalEffectField::ALL,
                PersonalEffectField::key,
                PersonalEffectField::kind,
            ),
            C::StatusClaims => specs(
                StatusClaimField::ALL,
                StatusClaimField::key,
                StatusClaimField::kind,
            ),
            C::Sources => specs(SourceField::ALL, SourceField::key, SourceField::kind),
            C::Requests => specs(RequestField::ALL, RequestField::key, RequestField::kind),
            C::RequestReplies => specs(ReplyField::ALL, ReplyField::key, ReplyField::kind),
            C::ExternalRefs => specs(
                ExternalRefField::ALL,
                ExternalRefField::key,
                ExternalRefField::kind,
            ),
            C::Dna => specs(
                DnaSampleField::ALL,
                DnaSampleField::key,
                DnaSampleField::kind,
            ),
            C::Remains => specs(RemainsField::ALL, RemainsField::key, RemainsField::kind),
            C::Timeline => specs(TimelineField::ALL, TimelineField::key, TimelineField::kind),
            C::Attachments => specs(
                AttachmentField::ALL,
                AttachmentField::key,
                AttachmentField::kind,
            ),
            C::Links => specs(LinkField::ALL, LinkField::key, LinkField::kind),
            C::SourceVerification => specs(
                SourceVerificationField::ALL,
                SourceVerificationField::key,
                SourceVerificationField::kind,
            ),
            C::Duplicates => specs(
                DuplicateField::ALL,
                DuplicateField::key,
                DuplicateField::kind,
            ),
        }
    }
}

/// A field of an item, tagged with its collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemField {
    NameVariant(NameVariantField),
    DistinguishingMark(DistinguishingMarkField),
    MedicalDevice(MedicalDeviceField),
    PersonalEffect(PersonalEffectField),
    StatusClaim(StatusClaimField),
    Source(SourceField),
    Request(RequestField),
    Reply(ReplyField),
    ExternalRef(ExternalRefField),
    Dna(DnaSampleField),
    Remains(RemainsField),
    Timeline(TimelineField),
    Attachment(AttachmentField),
    Link(LinkField),
    SourceVerification(SourceVerificationField),
    Duplicate(DuplicateField),
}

macro_rules! item_field_dispatch {
    ($self:expr, $f:ident => $e:expr) => {
        match $self {
            ItemField::NameVariant($f) => $e,
            ItemField::DistinguishingMark($f) => $e,
            ItemField::MedicalDevice($f) => $e,
            ItemField::PersonalEffect($f) => $e,
            ItemField::StatusClaim($f) => $e,
            ItemField::Source($f) => $e,
            ItemField::Request($f) => $e,
            ItemField::Reply($f) => $e,
            ItemField::ExternalRef($f) => $e,
            ItemField::Dna($f) => $e,
            ItemField::Remains($f) => $e,
            ItemField::Timeline($f) => $e,
            ItemField::Attachment($f) => $e,
            ItemField::Link($f) => $e,
            ItemField::SourceVerification($f) => $e,
            ItemField::Duplicate($f) => $e,
        }
    };
}

impl ItemField {
    pub fn collection(self) -> Collection {
        match self {
            ItemField::NameVariant(_) => Collection::NameVariants,
            ItemField::DistinguishingMark(_) => Collection::DistinguishingMarks,
            ItemField::MedicalDevice(_) => Collection::MedicalDevices,
            ItemField::PersonalEffect(_) => Collection::PersonalEffects,
            ItemField::StatusClaim(_) => Collection::StatusClaims,
            ItemField::Source(_) => Collection::Sources,
            ItemField::Request(_) => Collection::Requests,
            ItemField::Reply(_) => Collection::RequestReplies,
            ItemField::ExternalRef(_) => Collection::ExternalRefs,
            ItemField::Dna(_) => Collection::Dna,
            ItemField::Remains(_) => Collection::Remains,
            ItemField::Timeline(_) => Collection::Timeline,
            ItemField::Attachment(_) => Collection::Attachments,
            ItemField::Link(_) => Collection::Links,
            ItemField::SourceVerification(_) => Collection::SourceVerification,
            ItemField::Duplicate(_) => Collection::Duplicates,
        }
    }

    pub fn key(self) -> &'static str {
        item_field_dispatch!(self, f => f.key())
    }

    pub fn kind(self) -> FieldKind {
        item_field_dispatch!(self, f => f.kind())
    }
}

/// The address of one item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemRef {
    pub collection: Collection,
    pub id: ItemId,
    /// The request a reply belongs to; `None` for every other collection.
    pub parent: Option<ItemId>,
}

impl ItemRef {
    pub fn new(collection: Collection, id: ItemId) -> Self {
        Self {
            collection,
            id,
            parent: None,
        }
    }

    pub fn reply(request: ItemId, reply: ItemId) -> Self {
        Self {
            collection: Collection::RequestReplies,
            id: reply,
            parent: Some(request),
        }
    }

    /// `timeline.t1`, `requests.r1.replies.a1`
    pub fn path(&self) -> String {
        match &self.parent {
            Some(parent) => format!("requests.{parent}.replies.{}", self.id),
            None => format!("{}.{}", self.collection.path().join("."), self.id),
        }
    }
}

// ------------------------------------------------------------- documents

/// A case document, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub schema_version: u64,
    pub created_at: Option<i64>,
    pub created_by: Option<String>,
    /// The coordination document's id (bare, without `automerge:`).
    pub coordination: Register<String>,
    pub person: Person,
    pub name_variants: BTreeMap<ItemId, Item<NameVariant>>,
    pub distinguishing_marks: BTreeMap<ItemId, Item<DistinguishingMark>>,
    pub medical_devices: BTreeMap<ItemId, Item<MedicalDevice>>,
    pub personal_effects: BTreeMap<ItemId, Item<PersonalEffect>>,
    pub military: Military,
    pub disappearance: Disappearance,
    pub status_claims: BTreeMap<ItemId, Item<StatusClaim>>,
    pub sources: BTreeMap<ItemId, Item<Source>>,
    pub requests: BTreeMap<ItemId, Item<Request>>,
    pub external_refs: BTreeMap<ItemId, Item<ExternalRef>>,
    pub dna: BTreeMap<ItemId, Item<DnaSample>>,
    pub remains: BTreeMap<ItemId, Item<RemainsReport>>,
    pub burial: Burial,
    pub timeline: BTreeMap<ItemId, Item<TimelineEntry>>,
    pub attachments: BTreeMap<ItemId, Item<Attachment>>,
    pub links: BTreeMap<ItemId, Item<CaseLink>>,
}

/// A coordination document, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Coordination {
    pub schema_version: u64,
    pub created_at: Option<i64>,
    pub created_by: Option<String>,
    /// The case document's id.
    pub case: Register<String>,
    pub official_status: OfficialStatus,
    pub closure: Closure,
    pub source_verification: BTreeMap<ItemId, Item<SourceVerification>>,
    pub duplicates: BTreeMap<ItemId, Item<DuplicateLink>>,
}

/// Lookups by name, for drivers that receive edits as data from JS or JSON.
impl Field {
    /// Every register and narrative of every section.
    pub fn all() -> Vec<Field> {
        let mut out = Vec::new();
        out.extend(PersonField::ALL.iter().map(|f| Field::Person(*f)));
        out.extend(MilitaryField::ALL.iter().map(|f| Field::Military(*f)));
        out.extend(
            DisappearanceField::ALL
                .iter()
                .map(|f| Field::Disappearance(*f)),
        );
        out.extend(BurialField::ALL.iter().map(|f| Field::Burial(*f)));
        out.extend(
            OfficialStatusField::ALL
                .iter()
                .map(|f| Field::OfficialStatus(*f)),
        );
        out.extend(ClosureField::ALL.iter().map(|f| Field::Closure(*f)));
        out
    }

    /// The field at a dotted path such as `military.unit`.
    pub fn by_path(path: &str) -> Option<Field> {
        Self::all().into_iter().find(|f| f.path() == path)
    }
}

impl ItemField {
    /// Every field of every collection's items.
    pub fn all() -> Vec<ItemField> {
        let mut out = Vec::new();
        out.extend(
            NameVariantField::ALL
                .iter()
                .map(|f| ItemField::NameVariant(*f)),
        );
        out.extend(
            DistinguishingMarkField::ALL
                .iter()
                .map(|f| ItemField::DistinguishingMark(*f)),
        );
        out.extend(
            MedicalDeviceField::ALL
                .iter()
                .map(|f| ItemField::MedicalDevice(*f)),
        );
        out.extend(
            PersonalEffectField::ALL
                .iter()
                .map(|f| ItemField::PersonalEffect(*f)),
        );
        out.extend(
            StatusClaimField::ALL
                .iter()
                .map(|f| ItemField::StatusClaim(*f)),
        );
        out.extend(SourceField::ALL.iter().map(|f| ItemField::Source(*f)));
        out.extend(RequestField::ALL.iter().map(|f| ItemField::Request(*f)));
        out.extend(ReplyField::ALL.iter().map(|f| ItemField::Reply(*f)));
        out.extend(
            ExternalRefField::ALL
                .iter()
                .map(|f| ItemField::ExternalRef(*f)),
        );
        out.extend(DnaSampleField::ALL.iter().map(|f| ItemField::Dna(*f)));
        out.extend(RemainsField::ALL.iter().map(|f| ItemField::Remains(*f)));
        out.extend(TimelineField::ALL.iter().map(|f| ItemField::Timeline(*f)));
        out.extend(
            AttachmentField::ALL
                .iter()
                .map(|f| ItemField::Attachment(*f)),
        );
        out.extend(LinkField::ALL.iter().map(|f| ItemField::Link(*f)));
        out.extend(
            SourceVerificationField::ALL
                .iter()
                .map(|f| ItemField::SourceVerification(*f)),
        );
        out.extend(DuplicateField::ALL.iter().map(|f| ItemField::Duplicate(*f)));
        out
    }

    /// The field `key` of `collection`'s items.
    pub fn by_key(collection: Collection, key: &str) -> Option<ItemField> {
        Self::all()
            .into_iter()
            .find(|f| f.collection() == collection && f.key() == key)
    }
}

impl Collection {
    /// The collection named as by [`Collection::name`] (`timeline`,
    /// `person.name_variants`, `requests.*.replies`…).
    pub fn by_name(name: &str) -> Option<Collection> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[cfg(test)]
mod lookup_tests {
    use super::*;

    #[test]
    fn every_field_is_found_by_its_own_name() {
        for f in Field::all() {
            assert_eq!(Field::by_path(&f.path()), Some(f));
        }
        for f in ItemField::all() {
            assert_eq!(ItemField::by_key(f.collection(), f.key()), Some(f));
        }
        for c in Collection::ALL {
            assert_eq!(Collection::by_name(c.name()), Some(c));
        }
        assert_eq!(Field::by_path("military.nonsense"), None);
    }
}
