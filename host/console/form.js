// A form from a tool's JSON Schema: strings, numbers, integers, booleans, enums, arrays and
// nested objects, required fields marked, defaults filled in. What is typed is sent as it
// is (a number field holding "abc" sends the text): the server checks the arguments and
// its error names the field, which is how a person learns what the tool accepts.

import { el } from './api.js';

let fields = 0;

/** A field for `schema`; `field.read()` gives its value, or undefined when left empty. */
function field(schema, label, required, path) {
  const id = `field-${++fields}`;
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
  const title = el('label', { for: id }, label, required ? el('span', { class: 'required', title: 'required' }, ' *') : null);
  const hint = schema.description ? el('small', { class: 'hint', id: `${id}-hint` }, schema.description) : null;
  const common = { id, name: path, 'data-path': path, 'aria-describedby': hint ? `${id}-hint` : null };
  const wrap = (input, read) => ({ element: el('div', { class: 'field', 'data-path': path }, title, input, hint), read, input });

  if (Array.isArray(schema.enum)) {
    const select = el('select', common, required ? null : el('option', { value: '' }, '(none)'),
      schema.enum.map((v, i) => el('option', { value: String(i), selected: v === schema.default }, JSON.stringify(v))));
    return wrap(select, () => (select.value === '' ? undefined : schema.enum[Number(select.value)]));
  }
  if (type === 'boolean') {
    const box = el('input', { ...common, type: 'checkbox', checked: schema.default === true });
    const touched = { value: schema.default !== undefined };
    box.addEventListener('change', () => (touched.value = true));
    return wrap(box, () => (touched.value || required ? box.checked : undefined));
  }
  if (type === 'number' || type === 'integer') {
    const input = el('input', { ...common, type: 'text', inputmode: type === 'integer' ? 'numeric' : 'decimal', value: schema.default ?? '' });
    return wrap(input, () => {
      const text = input.value.trim();
      if (text === '') return undefined;
      const number = Number(text);
      return Number.isFinite(number) ? number : text;
    });
  }
  if (type === 'string') {
    const long = (schema.maxLength ?? 0) > 200 || /text|content|body/.test(label);
    const input = long
      ? el('textarea', { ...common, rows: 3 }, schema.default ?? '')
      : el('input', { ...common, type: 'text', value: schema.default ?? '' });
    return wrap(input, () => (input.value === '' && !required ? undefined : input.value));
  }
  if (type === 'array' && schema.items && typeof schema.items === 'object') {
    return array(schema, title, hint, path);
  }
  if (type === 'object' && schema.properties) {
    const nested = object(schema, path);
    const set = el('fieldset', { class: 'field', 'data-path': path }, el('legend', {}, label, required ? ' *' : ''), hint, nested.element);
    return { element: set, read: nested.read };
  }
  // Anything the form cannot draw (anyOf, free objects): JSON typed by hand.
  const text = el('textarea', { ...common, rows: 2, placeholder: 'JSON' }, schema.default !== undefined ? JSON.stringify(schema.default) : '');
  return wrap(text, () => {
    if (text.value.trim() === '') return undefined;
    try {
      return JSON.parse(text.value);
    } catch {
      return text.value;
    }
  });
}

function array(schema, title, hint, path) {
  const items = [];
  const list = el('ol', { class: 'items' });
  const add = (value) => {
    const index = items.length;
    const item = field({ ...schema.items, default: value ?? schema.items.default }, `item ${index + 1}`, true, `${path}/${index}`);
    const row = el('li', {}, item.element);
    const remove = el('button', { type: 'button', class: 'small', 'aria-label': `Remove item ${index + 1}` }, 'Remove');
    remove.addEventListener('click', () => {
      items.splice(items.indexOf(entry), 1);
      row.remove();
    });
    const entry = { read: item.read };
    row.append(remove);
    items.push(entry);
    list.append(row);
  };
  for (const value of schema.default ?? []) add(value);
  const more = el('button', { type: 'button', class: 'small' }, 'Add item');
  more.addEventListener('click', () => add());
  return {
    element: el('div', { class: 'field', 'data-path': path }, title, hint, list, more),
    read: () => (items.length ? items.map((i) => i.read()).map((v) => v ?? null) : undefined),
  };
}

function object(schema, path) {
  const required = new Set(schema.required ?? []);
  const parts = Object.entries(schema.properties).map(([name, property]) => [name, field(property, name, required.has(name), `${path}/${name}`)]);
  return {
    element: el('div', { class: 'fields' }, parts.map(([, f]) => f.element)),
    read: () => {
      const value = {};
      for (const [name, f] of parts) {
        const v = f.read();
        if (v !== undefined) value[name] = v;
      }
      return value;
    },
  };
}

/** The form's fields for a tool's input schema, and a reader of the arguments. */
export function argumentsForm(schema) {
  if (!schema || schema.type !== 'object' || !schema.properties) {
    return field({}, 'arguments (JSON)', false, '');
  }
  return object(schema, '');
}
