-- Deterministic retail sample data. psql -v scale=1.0 -f generate.sql
-- scale 1.0: 8 stores, 50,000 customers, 20 categories, 424 products,
-- 3,168 inventory rows, 200,000 orders, 400,000 order items (653,620 synced
-- rows) plus 424 product embeddings (16 KB each, not synced).
-- Every value is a function of the row number (md5-based), so two runs
-- produce identical tables.
\set ON_ERROR_STOP on
SELECT greatest(1, round(50000 * :scale))::int AS n_customers,
       greatest(1, round(200000 * :scale))::int AS n_orders,
       greatest(1, round(424 * least(:scale * 10, 1)))::int AS n_products \gset

INSERT INTO stores
SELECT i, 'Store ' || i, (ARRAY['Oslo','Lyon','Porto','Gdansk','Leeds','Graz','Turku','Cork'])[i],
       date '2015-01-01' + i * 97
FROM generate_series(1, 8) i;

INSERT INTO categories
SELECT md5('category' || i)::uuid, 'Category ' || i FROM generate_series(1, 20) i;

INSERT INTO products
SELECT i, md5('category' || (1 + i % 20))::uuid, 'Product ' || i,
       round((1 + (('x' || substr(md5('price' || i), 1, 6))::bit(24)::int % 50000) / 100.0)::numeric, 2),
       jsonb_build_object('color', (ARRAY['red','green','blue','black'])[1 + i % 4], 'weight_g', 100 + i % 900)
FROM generate_series(1, :n_products) i;

INSERT INTO product_embeddings
SELECT i, decode(repeat(md5('embedding' || i), 512), 'hex')
FROM generate_series(1, :n_products) i;

INSERT INTO inventory
SELECT md5('inventory' || s || '-' || p)::uuid, s, p, 20 + (s * 31 + p * 17) % 200
FROM generate_series(1, 8) s, generate_series(1, least(396, :n_products)) p;

INSERT INTO customers
SELECT i, 1 + i % 8, 'Customer ' || i, 'customer' || i || '@example.com',
       i % 50 = 0, timestamptz '2020-01-01 00:00:00+00' + (i * interval '17 minutes')
FROM generate_series(1, :n_customers) i;

INSERT INTO orders
SELECT i, 1 + (i * 7919) % :n_customers, 1 + i % 8,
       timestamptz '2022-01-01 00:00:00+00' + (i * interval '151 seconds'),
       (ARRAY['new','paid','shipped','delivered','returned'])[1 + i % 5],
       round((5 + (('x' || substr(md5('total' || i), 1, 6))::bit(24)::int % 100000) / 100.0)::numeric, 2)
FROM generate_series(1, :n_orders) i;

INSERT INTO order_items
SELECT md5('item' || o || '-' || k)::uuid, o, 1 + (o * 31 + k * 7) % :n_products, 1 + (o + k) % 5,
       round((1 + ((o * 13 + k) % 5000) / 100.0)::numeric, 2)
FROM generate_series(1, :n_orders) o, generate_series(1, 2) k;

ANALYZE;
