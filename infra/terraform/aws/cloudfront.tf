# The CDN in front of the bucket. The exporter sets Cache-Control on every object (DESIGN §4);
# each cache policy below has a minimum TTL of 0 so that the origin's max-age is honoured, a
# default TTL equal to what DESIGN §4 gives the objects it serves (used only if an object
# arrives without Cache-Control), and a maximum TTL that caps what a mistaken header could
# make the edge keep.
#
#   path                          policy          origin Cache-Control
#   retrieve/*                    retrieve        closed day: immutable, 14 days; today and 00000: 1 hour
#   exposure-configuration/*      configuration   public, max-age=3600
#   */index.txt, */index.json     index           public, max-age=300 (CA/index.txt, CA/daily/index.txt, CA/index.json)
#   *.zip                         immutable       public, max-age=1209600, immutable
#   everything else               origin          whatever the object says

locals {
  exports_origin_id = "exports-bucket"

  # infra/cdn/retrieve.js with its two placeholders filled in. Each placeholder must occur once
  # (infra/dev/check-infra checks it), so that only the constants are replaced.
  retrieve_function_code = replace(
    replace(
      file("${path.module}/../../cdn/retrieve.js"),
      "__HMAC_KEY_HEX__",
      lower(var.retrieve_hmac_key_hex),
    ),
    "__REGION_PATH__",
    var.compat_region_path,
  )
}

resource "aws_cloudfront_origin_access_control" "exports" {
  name                              = "${var.name}-exports"
  description                       = "CloudFront reads the Diagnosis Server export bucket"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

# Viewer-request function of the retrieve/* behaviour: checks the apps' HMAC, the method and the
# day, and rewrites /retrieve/{MCC}/{P}/{hmac} to the object key retrieve/{MCC}/{P}. The cache
# key is the rewritten path, so the hourly HMAC does not split the cache. The function code holds
# the HMAC secret: it is readable by anyone allowed cloudfront:GetFunction, and it is in the
# Terraform state.
resource "aws_cloudfront_function" "retrieve" {
  name    = "${var.name}-retrieve"
  runtime = "cloudfront-js-2.0"
  comment = "COVID Alert retrieval: HMAC check and rewrite (infra/cdn/retrieve.js)"
  publish = true
  code    = local.retrieve_function_code

  lifecycle {
    precondition {
      condition     = length(local.retrieve_function_code) <= 10240
      error_message = "The retrieval function exceeds CloudFront Functions' 10 KB code limit."
    }
  }
}

resource "aws_cloudfront_cache_policy" "origin" {
  name        = "${var.name}-origin"
  comment     = "Diagnosis Server: the origin's Cache-Control decides"
  min_ttl     = 0
  default_ttl = 300
  max_ttl     = 31536000

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_brotli = true
    enable_accept_encoding_gzip   = true

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

resource "aws_cloudfront_cache_policy" "immutable" {
  name        = "${var.name}-immutable"
  comment     = "Diagnosis Server: hourly and daily export files, 14 days"
  min_ttl     = 0
  default_ttl = 1209600
  max_ttl     = 31536000

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_brotli = false
    enable_accept_encoding_gzip   = false

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

resource "aws_cloudfront_cache_policy" "index" {
  name        = "${var.name}-index"
  comment     = "Diagnosis Server: index.txt and index.json, 5 minutes"
  min_ttl     = 0
  default_ttl = 300
  max_ttl     = 300

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_brotli = true
    enable_accept_encoding_gzip   = true

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

resource "aws_cloudfront_cache_policy" "configuration" {
  name        = "${var.name}-configuration"
  comment     = "Diagnosis Server: exposure configurations, 1 hour"
  min_ttl     = 0
  default_ttl = 3600
  max_ttl     = 3600

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_brotli = true
    enable_accept_encoding_gzip   = true

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

resource "aws_cloudfront_cache_policy" "retrieve" {
  name        = "${var.name}-retrieve"
  comment     = "Diagnosis Server: COVID Alert retrieval files, as the origin says"
  min_ttl     = 0
  default_ttl = 3600
  max_ttl     = 1209600

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_brotli = false
    enable_accept_encoding_gzip   = false

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

resource "aws_cloudfront_distribution" "exports" {
  enabled         = true
  comment         = "Diagnosis Server exports (${var.name})"
  is_ipv6_enabled = true
  http_version    = "http2and3"
  price_class     = var.cloudfront_price_class
  aliases         = var.cloudfront_aliases

  origin {
    origin_id                = local.exports_origin_id
    domain_name              = aws_s3_bucket.exports.bucket_regional_domain_name
    origin_path              = var.bucket_prefix == "" ? "" : "/${var.bucket_prefix}"
    origin_access_control_id = aws_cloudfront_origin_access_control.exports.id
  }

  # Behaviours are matched in this order; the first match wins.

  # The deployed apps' retrieval path (DESIGN §4.3). Every method reaches the function, which
  # answers 405 to anything but GET (after the HMAC check), so nothing but GET reaches the
  # bucket. Plain http is refused: the apps accept only a 200.
  ordered_cache_behavior {
    path_pattern           = "retrieve/*"
    target_origin_id       = local.exports_origin_id
    viewer_protocol_policy = "https-only"
    allowed_methods        = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"]
    cached_methods         = ["GET", "HEAD"]
    compress               = false
    cache_policy_id        = aws_cloudfront_cache_policy.retrieve.id

    function_association {
      event_type   = "viewer-request"
      function_arn = aws_cloudfront_function.retrieve.arn
    }
  }

  ordered_cache_behavior {
    path_pattern           = "exposure-configuration/*"
    target_origin_id       = local.exports_origin_id
    viewer_protocol_policy = "redirect-to-https"
    allowed_methods        = ["GET", "HEAD"]
    cached_methods         = ["GET", "HEAD"]
    compress               = true
    cache_policy_id        = aws_cloudfront_cache_policy.configuration.id
  }

  # CA/index.txt and CA/daily/index.txt ("*" matches "/" too).
  ordered_cache_behavior {
    path_pattern           = "*/index.txt"
    target_origin_id       = local.exports_origin_id
    viewer_protocol_policy = "redirect-to-https"
    allowed_methods        = ["GET", "HEAD"]
    cached_methods         = ["GET", "HEAD"]
    compress               = true
    cache_policy_id        = aws_cloudfront_cache_policy.index.id
  }

  ordered_cache_behavior {
    path_pattern           = "*/index.json"
    target_origin_id       = local.exports_origin_id
    viewer_protocol_policy = "redirect-to-https"
    allowed_methods        = ["GET", "HEAD"]
    cached_methods         = ["GET", "HEAD"]
    compress               = true
    cache_policy_id        = aws_cloudfront_cache_policy.index.id
  }

  ordered_cache_behavior {
    path_pattern           = "*.zip"
    target_origin_id       = local.exports_origin_id
    viewer_protocol_policy = "redirect-to-https"
    allowed_methods        = ["GET", "HEAD"]
    cached_methods         = ["GET", "HEAD"]
    compress               = false
    cache_policy_id        = aws_cloudfront_cache_policy.immutable.id
  }

  default_cache_behavior {
    target_origin_id       = local.exports_origin_id
    viewer_protocol_policy = "redirect-to-https"
    allowed_methods        = ["GET", "HEAD"]
    cached_methods         = ["GET", "HEAD"]
    compress               = true
    cache_policy_id        = aws_cloudfront_cache_policy.origin.id
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  # Without acm_certificate_arn the distribution answers on its *.cloudfront.net name only.
  viewer_certificate {
    cloudfront_default_certificate = var.acm_certificate_arn == null
    acm_certificate_arn            = var.acm_certificate_arn
    ssl_support_method             = var.acm_certificate_arn == null ? null : "sni-only"
    minimum_protocol_version       = var.acm_certificate_arn == null ? "TLSv1" : "TLSv1.2_2021"
  }
}
