package username

// reservedV1Names are version 1's reserved names, kept in version 2:
// people trust them to speak for the service.
var reservedV1Names = []string{
	"abuse", "admin", "administrator", "api", "contact",
	"help", "hostmaster", "info", "mail", "moderator",
	"no-reply", "nobody", "noreply", "null", "official",
	"postmaster", "registry", "root", "security", "staff",
	"support", "system", "undefined", "webmaster", "www",
}

// webPaths are the well-known web paths that version 2 also reserves, so
// that a profile page at /{name} can never shadow them. The list is
// anchored on GitLab's reserved top-level routes (TOP_LEVEL_ROUTES in
// lib/gitlab/path_regex.rb, the file names among them), with the files
// that other standards put at a site's root. Names that begin with a dot,
// such as .well-known (RFC 8615), are refused by the path rule instead.
var webPaths = []string{
	// GitLab's TOP_LEVEL_ROUTES that are files.
	"404.html", "422.html", "500.html", "502.html", "503.html",
	"apple-touch-icon.png", "apple-touch-icon-precomposed.png",
	"favicon.ico", "favicon.png", "robots.txt", "sitemap.xml", "sitemap.xml.gz",
	// Other files that standards or browsers fetch from a site's root.
	"ads.txt", "app-ads.txt", // IAB Tech Lab ads.txt 1.1
	"browserconfig.xml",                         // Microsoft pinned-site tiles
	"crossdomain.xml", "clientaccesspolicy.xml", // Flash and Silverlight cross-domain policies
	"humans.txt", "security.txt", // humanstxt.org; RFC 9116 (legacy root location)
	"manifest.json", "site.webmanifest", // W3C Web App Manifest
	"index.html", "sitemap", "well-known",
}

// reservedV2 is version 2's reserved list.
func reservedV2() []string {
	return append(append([]string(nil), reservedV1Names...), webPaths...)
}
