// Photos are re-encoded on the phone before anything is kept.
//
// Privacy: a photo straight from a phone camera carries EXIF metadata: GPS
// position, time, camera serial. Drawing the decoded pixels onto a canvas
// and encoding a new JPEG from it writes no EXIF (or any other metadata
// segment) at all, so nothing of the original file's metadata survives.
// EXIF orientation is applied first (`imageOrientation: 'from-image'`) so
// the picture still stands the right way up.
//
// Only metadata (name, size, type, digest) goes into the case document's
// `attachments`; the image bytes are not stored yet.

const MAX_SIDE = 2048;
const QUALITY = 0.85;

/** Re-encodes `file` as a JPEG without metadata. Returns
 *  `{blob, width, height}`. */
export async function reencodeJpeg(file, { maxSide = MAX_SIDE, quality = QUALITY } = {}) {
  const bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
  try {
    const scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
    const width = Math.max(1, Math.round(bitmap.width * scale));
    const height = Math.max(1, Math.round(bitmap.height * scale));
    let blob;
    if (typeof OffscreenCanvas !== 'undefined') {
      const canvas = new OffscreenCanvas(width, height);
      canvas.getContext('2d').drawImage(bitmap, 0, 0, width, height);
      blob = await canvas.convertToBlob({ type: 'image/jpeg', quality });
    } else {
      const canvas = document.createElement('canvas');
      canvas.width = width;
      canvas.height = height;
      canvas.getContext('2d').drawImage(bitmap, 0, 0, width, height);
      blob = await new Promise((resolve, reject) =>
        canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('encode failed'))), 'image/jpeg', quality),
      );
    }
    return { blob, width, height };
  } finally {
    bitmap.close();
  }
}

/** Hex SHA-256 of a blob. */
export async function sha256Hex(blob) {
  const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The name to keep: the original base name with a `.jpg` extension
 *  (the bytes are a new JPEG), limited to a sane length. */
export function jpegName(name) {
  const base = String(name || 'photo').replace(/\.[^.]*$/, '').replace(/[\u0000-\u001f]/g, '').slice(0, 120);
  return `${base || 'photo'}.jpg`;
}
