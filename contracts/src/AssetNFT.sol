// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC2981} from "@openzeppelin/contracts/interfaces/IERC2981.sol";
import {IERC4906} from "@openzeppelin/contracts/interfaces/IERC4906.sol";
import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721Burnable} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721Burnable.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ModelRegistry} from "./ModelRegistry.sol";

/// @title AssetNFT
/// @notice Generated game assets as ERC-721 tokens with on-chain provenance (ERC-2981 royalties, ERC-4906
/// metadata updates).
/// @dev The token id IS the asset's content hash: `tokenId == uint256(sha256(asset bytes))`. That makes
/// "a content hash is minted once" a property of the id itself and saves a storage slot per mint. The
/// provenance record (creator, model version, royalty) takes one slot and is kept after a burn, so a
/// burnt content hash can never be minted again. The creator is the minting account (`msg.sender`), which
/// cannot be forged. The metadata URI is stored only when given; otherwise `tokenURI` is the base URI
/// followed by the content hash in 0x-hex. Minting is open to anyone. The owner (the timelock) can only
/// change the base URI.
contract AssetNFT is ERC721Burnable, IERC2981, IERC4906, Ownable {
    /// @notice An asset's provenance and terms, as returned by {assetOf}.
    struct Asset {
        bytes32 contentHash;
        uint256 modelVersionId;
        address creator;
        address royaltyReceiver;
        uint256 royaltyBps;
        string uri;
    }

    struct Record {
        address creator;
        uint64 modelVersionId;
        uint16 royaltyBps;
        bool customReceiver;
    }

    /// @notice Highest royalty a token may carry, in basis points (10%).
    uint256 public constant MAX_ROYALTY_BPS = 1_000;

    /// @notice The model registry that model versions refer to.
    ModelRegistry public immutable registry;

    string private _baseTokenURI;
    mapping(uint256 tokenId => Record) private _records;
    mapping(uint256 tokenId => address) private _royaltyReceivers;
    mapping(uint256 tokenId => string) private _tokenURIs;

    /// @notice An asset was minted with its provenance record.
    event AssetMinted(
        uint256 indexed tokenId,
        address indexed creator,
        uint256 indexed modelVersionId,
        address royaltyReceiver,
        uint256 royaltyBps,
        string uri
    );

    /// @notice The content hash is zero.
    error InvalidContentHash();
    /// @notice This content hash was minted before (maybe burnt since).
    error ContentAlreadyMinted(bytes32 contentHash);
    /// @notice The model version does not exist in the registry.
    error UnknownModelVersion(uint256 modelVersionId);
    /// @notice The royalty exceeds {MAX_ROYALTY_BPS}.
    error RoyaltyTooHigh(uint256 royaltyBps);
    /// @notice The arrays of a batch differ in length.
    error LengthMismatch();
    /// @notice No asset was ever minted with this token id.
    error UnknownAsset(uint256 tokenId);

    /// @param registry_ The model registry.
    /// @param baseURI Prefix of the default token URI.
    /// @param initialOwner The timelock.
    constructor(ModelRegistry registry_, string memory baseURI, address initialOwner)
        ERC721("Autonomy Asset", "ASSET")
        Ownable(initialOwner)
    {
        registry = registry_;
        _baseTokenURI = baseURI;
    }

    /// @notice Mints the asset with content hash `contentHash` to `to`, the caller as its creator.
    /// @param to Receives the token (contracts must accept ERC-721 tokens).
    /// @param contentHash sha256 of the asset's bytes; becomes the token id.
    /// @param modelVersionId The registry version that made the asset, or 0 for none.
    /// @param uri Metadata URI, or "" for the default (base URI + content hash), which costs less gas.
    /// @param royaltyReceiver Receives royalties; address(0) means the creator.
    /// @param royaltyBps Royalty in basis points, at most {MAX_ROYALTY_BPS}.
    /// @return tokenId `uint256(contentHash)`.
    function mint(
        address to,
        bytes32 contentHash,
        uint256 modelVersionId,
        string calldata uri,
        address royaltyReceiver,
        uint16 royaltyBps
    ) external returns (uint256 tokenId) {
        Record memory record = _newRecord(modelVersionId, royaltyReceiver, royaltyBps);
        tokenId = _mintAsset(to, contentHash, record, bytes(uri), royaltyReceiver);
    }

    /// @notice Mints several assets made by one model version, with the same recipient and royalty terms.
    /// @param to Receives the tokens.
    /// @param contentHashes sha256 of each asset.
    /// @param modelVersionId The registry version that made them, or 0.
    /// @param uris One metadata URI per asset, or an empty array for the default URIs.
    /// @param royaltyReceiver Receives royalties; address(0) means the creator.
    /// @param royaltyBps Royalty in basis points, at most {MAX_ROYALTY_BPS}.
    function mintBatch(
        address to,
        bytes32[] calldata contentHashes,
        uint256 modelVersionId,
        string[] calldata uris,
        address royaltyReceiver,
        uint16 royaltyBps
    ) external {
        if (uris.length != 0 && uris.length != contentHashes.length) revert LengthMismatch();
        Record memory record = _newRecord(modelVersionId, royaltyReceiver, royaltyBps);
        for (uint256 i; i < contentHashes.length; ++i) {
            bytes calldata uri = uris.length == 0 ? msg.data[0:0] : bytes(uris[i]);
            _mintAsset(to, contentHashes[i], record, uri, royaltyReceiver);
        }
    }

    /// @notice Changes the base of default token URIs (owner only) and signals that all metadata changed.
    /// @param baseURI The new prefix.
    function setBaseURI(string calldata baseURI) external onlyOwner {
        _baseTokenURI = baseURI;
        emit BatchMetadataUpdate(0, type(uint256).max);
    }

    /// @notice The provenance record of an asset, burnt or not.
    function assetOf(uint256 tokenId) external view returns (Asset memory) {
        Record memory record = _records[tokenId];
        if (record.creator == address(0)) revert UnknownAsset(tokenId);
        (address receiver,) = royaltyInfo(tokenId, 0);
        return Asset(
            bytes32(tokenId), record.modelVersionId, record.creator, receiver, record.royaltyBps, _uri(tokenId)
        );
    }

    /// @notice The token id of the asset with this content hash; reverts if it was never minted.
    function tokenOfContent(bytes32 contentHash) external view returns (uint256 tokenId) {
        tokenId = uint256(contentHash);
        if (_records[tokenId].creator == address(0)) revert UnknownAsset(tokenId);
    }

    /// @notice The model version that made an asset (0 for none or an unknown token).
    function modelVersionOf(uint256 tokenId) external view returns (uint256) {
        return _records[tokenId].modelVersionId;
    }

    /// @notice ERC-2981 royalty for a sale of `tokenId` at `salePrice`.
    function royaltyInfo(uint256 tokenId, uint256 salePrice)
        public
        view
        returns (address receiver, uint256 royaltyAmount)
    {
        Record memory record = _records[tokenId];
        receiver = record.customReceiver ? _royaltyReceivers[tokenId] : record.creator;
        royaltyAmount = salePrice * record.royaltyBps / 10_000;
    }

    /// @notice The metadata URI of an existing token.
    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        return _uri(tokenId);
    }

    /// @notice ERC-165: ERC-721, ERC-721 metadata, ERC-2981 and ERC-4906.
    function supportsInterface(bytes4 interfaceId) public view override(ERC721, IERC165) returns (bool) {
        return interfaceId == type(IERC2981).interfaceId || interfaceId == bytes4(0x49064906)
            || super.supportsInterface(interfaceId);
    }

    function _newRecord(uint256 modelVersionId, address royaltyReceiver, uint16 royaltyBps)
        private
        view
        returns (Record memory)
    {
        if (modelVersionId != 0 && !registry.versionExists(modelVersionId)) {
            revert UnknownModelVersion(modelVersionId);
        }
        if (royaltyBps > MAX_ROYALTY_BPS) revert RoyaltyTooHigh(royaltyBps);
        bool custom = royaltyBps != 0 && royaltyReceiver != address(0) && royaltyReceiver != msg.sender;
        return Record(msg.sender, SafeCast.toUint64(modelVersionId), royaltyBps, custom);
    }

    /// @dev Records provenance before `_safeMint`, so a re-entrant mint of the same hash from
    /// `onERC721Received` fails.
    function _mintAsset(
        address to,
        bytes32 contentHash,
        Record memory record,
        bytes calldata uri,
        address royaltyReceiver
    ) private returns (uint256 tokenId) {
        if (contentHash == bytes32(0)) revert InvalidContentHash();
        tokenId = uint256(contentHash);
        if (_records[tokenId].creator != address(0)) revert ContentAlreadyMinted(contentHash);
        _records[tokenId] = record;
        if (record.customReceiver) _royaltyReceivers[tokenId] = royaltyReceiver;
        else royaltyReceiver = record.creator;
        if (uri.length != 0) _tokenURIs[tokenId] = string(uri);
        emit AssetMinted(
            tokenId, record.creator, record.modelVersionId, royaltyReceiver, record.royaltyBps, string(uri)
        );
        _safeMint(to, tokenId);
    }

    function _uri(uint256 tokenId) private view returns (string memory uri) {
        uri = _tokenURIs[tokenId];
        if (bytes(uri).length == 0) uri = string.concat(_baseTokenURI, Strings.toHexString(tokenId, 32));
    }
}
