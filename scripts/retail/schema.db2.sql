-- The sample retail schema for IBM DB2 LUW 11.5. Matches mappings/retail.yaml
-- (quoted lower-case names, as the mapping writes them). DB2 has no JSON
-- column type: a column whose comment says `json` holds JSON text, and the
-- connector reads and writes it as JSON. TIMESTAMP columns hold UTC.
CREATE TABLE "stores" ("store_id" INTEGER NOT NULL PRIMARY KEY, "name" VARCHAR(200) NOT NULL,
    "city" VARCHAR(200), "opened_on" DATE);
CREATE TABLE "customers" ("customer_id" INTEGER NOT NULL PRIMARY KEY, "store_id" INTEGER,
    "name" VARCHAR(200), "email" VARCHAR(200), "deleted" BOOLEAN NOT NULL DEFAULT FALSE,
    "created_at" TIMESTAMP);
CREATE TABLE "categories" ("id" CHAR(36) NOT NULL PRIMARY KEY, "name" VARCHAR(200) NOT NULL);
CREATE TABLE "products" ("product_id" INTEGER NOT NULL PRIMARY KEY, "category_id" CHAR(36),
    "name" VARCHAR(200) NOT NULL, "price" DECIMAL(10,2), "attributes" CLOB(1M));
COMMENT ON COLUMN "products"."attributes" IS 'json';
CREATE TABLE "inventory" ("id" CHAR(36) NOT NULL PRIMARY KEY, "store_id" INTEGER NOT NULL,
    "product_id" INTEGER NOT NULL, "quantity" INTEGER NOT NULL);
CREATE TABLE "orders" ("order_id" BIGINT NOT NULL PRIMARY KEY, "customer_id" INTEGER,
    "store_id" INTEGER, "order_date" TIMESTAMP, "status" VARCHAR(40), "total" DECIMAL(12,2));
CREATE TABLE "order_items" ("id" CHAR(36) NOT NULL PRIMARY KEY, "order_id" BIGINT NOT NULL,
    "product_id" INTEGER NOT NULL, "quantity" INTEGER NOT NULL, "price" DECIMAL(10,2));
CREATE TABLE "store_order_numbers" ("store_id" INTEGER NOT NULL, "order_no" INTEGER NOT NULL,
    "issued_at" TIMESTAMP, "note" VARCHAR(200), PRIMARY KEY ("store_id", "order_no"));
