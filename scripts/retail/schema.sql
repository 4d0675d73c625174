-- The sample retail schema (PostgreSQL). Matches mappings/retail.yaml.
-- No foreign keys here (a target may have them: sinks write parents first).
CREATE TABLE IF NOT EXISTS stores (
    store_id   integer PRIMARY KEY,
    name       text NOT NULL,
    city       text,
    opened_on  date
);
CREATE TABLE IF NOT EXISTS customers (
    customer_id integer PRIMARY KEY,
    store_id    integer,
    name        text,
    email       text,
    deleted     boolean NOT NULL DEFAULT false,
    created_at  timestamptz
);
CREATE TABLE IF NOT EXISTS categories (
    id   uuid PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE IF NOT EXISTS products (
    product_id  integer PRIMARY KEY,
    category_id uuid,
    name        text NOT NULL,
    price       numeric(10,2),
    attributes  jsonb
);
CREATE TABLE IF NOT EXISTS product_embeddings (
    product_id integer PRIMARY KEY,
    embedding  bytea
);
CREATE TABLE IF NOT EXISTS inventory (
    id         uuid PRIMARY KEY,
    store_id   integer NOT NULL,
    product_id integer NOT NULL,
    quantity   integer NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id    bigint PRIMARY KEY,
    customer_id integer,
    store_id    integer,
    order_date  timestamptz,
    status      text,
    total       numeric(12,2)
);
CREATE TABLE IF NOT EXISTS order_items (
    id         uuid PRIMARY KEY,
    order_id   bigint NOT NULL,
    product_id integer NOT NULL,
    quantity   integer NOT NULL,
    price      numeric(10,2)
);
CREATE TABLE IF NOT EXISTS store_order_numbers (
    store_id  integer NOT NULL,
    order_no  integer NOT NULL,
    issued_at timestamptz,
    note      text,
    PRIMARY KEY (store_id, order_no)
);
-- Counters need before images.
ALTER TABLE inventory REPLICA IDENTITY FULL;
