"""wxpush: a self-hosted WeChat customer-service webhook."""
