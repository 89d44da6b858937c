DROP FUNCTION finish_deliveries;
