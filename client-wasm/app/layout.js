// How the case document is laid out on screen. No imports: the catalogue
// test reads it under Node to check that every label exists.

// Sections of the editor, in order. `section` is a map of registers and
// narratives (schema `sections`), `collections` are schema collection
// names. Anything of the case document not listed here is appended at the
// end by the editor, so a new collection is never invisible.
export const LAYOUT = [
  {
    key: 'person',
    section: 'person',
    collections: ['person.name_variants', 'person.distinguishing_marks', 'person.medical_devices', 'person.personal_effects'],
  },
  { key: 'military', section: 'military' },
  { key: 'disappearance', section: 'disappearance' },
  { key: 'status_claims', collections: ['status_claims'] },
  { key: 'sources', collections: ['sources'] },
  { key: 'requests', collections: ['requests'] },
  { key: 'dna', collections: ['dna'] },
  { key: 'remains_burial', collections: ['remains'], section: 'burial' },
  { key: 'timeline', collections: ['timeline'] },
  { key: 'references', collections: ['external_refs', 'links'] },
  { key: 'attachments', collections: ['attachments'] },
];

// Attachment metadata is written once, from the re-encoded photo.
export const READ_ONLY = {
  attachments: new Set(['file_name', 'media_type', 'size_bytes', 'sha256', 'storage_ref', 'source_id']),
};

/** `requests.*.replies` -> `requests.replies` (catalogue keys). */
export function labelId(name) {
  return name.replace('.*.', '.');
}

/** Every catalogue key the editor asks for, given the engine's schema. */
export function labelKeys(schema) {
  const keys = new Set(['section.burial']);
  for (const e of LAYOUT) keys.add(`section.${e.key}`);
  for (const s of schema.sections) {
    if (s.doc !== 'case') continue;
    for (const f of s.fields) keys.add(`field.${f.path}`);
  }
  for (const c of schema.collections) {
    if (c.doc !== 'case') continue;
    const id = labelId(c.name);
    keys.add(`collection.${id}`);
    keys.add(`collection.${id}.add`);
    keys.add(`collection.${id}.empty`);
    for (const f of c.fields) if (f.kind !== 'reply collection') keys.add(`item.${id}.${f.key}`);
  }
  for (const s of schema.statuses) keys.add(`status.${s}`);
  return [...keys];
}
