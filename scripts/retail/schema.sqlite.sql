-- The sample retail schema for SQLite (the ODBC provider's tests and
-- benchmark). Matches mappings/retail.yaml. `INT PRIMARY KEY`, not
-- `INTEGER PRIMARY KEY`: the latter would turn a NULL id into a new rowid.
CREATE TABLE IF NOT EXISTS stores (store_id INT PRIMARY KEY, name TEXT NOT NULL, city TEXT, opened_on DATE);
CREATE TABLE IF NOT EXISTS customers (customer_id INT PRIMARY KEY, store_id INT, name TEXT, email TEXT,
    deleted BOOLEAN NOT NULL DEFAULT 0, created_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS categories (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (product_id INT PRIMARY KEY, category_id TEXT, name TEXT NOT NULL,
    price NUMERIC(10,2), attributes JSON);
CREATE TABLE IF NOT EXISTS inventory (id TEXT PRIMARY KEY, store_id INT NOT NULL, product_id INT NOT NULL,
    quantity INT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (order_id BIGINT PRIMARY KEY, customer_id INT, store_id INT,
    order_date TIMESTAMPTZ, status TEXT, total NUMERIC(12,2));
CREATE TABLE IF NOT EXISTS order_items (id TEXT PRIMARY KEY, order_id BIGINT NOT NULL, product_id INT NOT NULL,
    quantity INT NOT NULL, price NUMERIC(10,2));
CREATE TABLE IF NOT EXISTS store_order_numbers (store_id INT NOT NULL, order_no INT NOT NULL,
    issued_at TIMESTAMPTZ, note TEXT, PRIMARY KEY (store_id, order_no));
